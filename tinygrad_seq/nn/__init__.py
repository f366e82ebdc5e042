"""Neural-network building blocks with PyTorch's names, shapes and call signatures."""

from . import functional, init, tbptt, utils
from .layers import Dropout, Embedding, Linear, Sequential
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, Parameter, StateDictError
from .rnn import GRU, GRU_GATES, LSTM, LSTM_GATES, RNN, GRUCell, LSTMCell, RNNCell
from .tbptt import detach_state, sequential_partition, truncated_bptt

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "MSELoss", "NLLLoss", "functional", "utils",
           "Module", "Parameter", "StateDictError",
           "Dropout", "Embedding", "Linear", "Sequential", "init", "tbptt",
           "GRU", "GRU_GATES", "LSTM", "LSTM_GATES", "RNN", "GRUCell", "LSTMCell", "RNNCell",
           "detach_state", "sequential_partition", "truncated_bptt"]
