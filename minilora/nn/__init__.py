"""Layers and the Module system (``minilora.nn``), mirroring ``torch.nn``."""
from . import functional, init, modules, parameter, utils
from .checkpointing import checkpoint
from .layers import BCELoss, BCEWithLogitsLoss, Flatten, Softmax  # noqa: F401
from .layers import (CosineSimilarity, HuberLoss, KLDivLoss, LeakyReLU, MultiheadAttention,  # noqa: F401
                     SmoothL1Loss, Softplus)
from .layers import (CELU, ELU, GLU, SELU, Hardsigmoid, Hardswish, Hardtanh, LogSigmoid,  # noqa: F401
                     LogSoftmax, Mish, ReLU6, Softmin, Softsign)
from .layers import (CosineEmbeddingLoss, MarginRankingLoss, PairwiseDistance, TripletMarginLoss,  # noqa: F401
                     Unflatten)
from .layers import BatchNorm1d, BatchNorm2d, GroupNorm  # noqa: F401
from .layers import (AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, Conv1d, Conv2d, MaxPool1d,  # noqa: F401
                     MaxPool2d)
from .layers import GRU, LSTM, RNN  # noqa: F401
from .layers import _RNNBase as RNNBase, _RNNCellBase as RNNCellBase  # noqa: F401  (isinstance checks in inits)
from .layers import ConvTranspose1d, ConvTranspose2d, Dropout1d, Dropout2d, Dropout3d  # noqa: F401
from .layers import AdaptiveMaxPool1d, AdaptiveMaxPool2d, PixelShuffle, PixelUnshuffle, Softmax2d  # noqa: F401
from .layers import InstanceNorm1d, InstanceNorm2d  # noqa: F401
from .layers import GRUCell, LSTMCell, RNNCell  # noqa: F401
from .layers import ChannelShuffle, Conv3d, ConvTranspose3d, CTCLoss  # noqa: F401
from .layers import CircularPad3d, ConstantPad3d, ReflectionPad3d, ReplicationPad3d, ZeroPad3d  # noqa: F401
from .layers import AdaptiveAvgPool3d, AdaptiveMaxPool3d, AvgPool3d, LPPool3d, MaxPool3d, MaxUnpool3d  # noqa: F401
from .layers import FractionalMaxPool2d, FractionalMaxPool3d, LinearCrossEntropyLoss  # noqa: F401
from .layers import AdaptiveLogSoftmaxWithLoss, NLLLoss2d  # noqa: F401
from .parallel import DataParallel  # noqa: F401
from .lazy import (LazyConv1d, LazyConv2d, LazyConv3d, LazyConvTranspose1d, LazyConvTranspose2d,  # noqa: F401
                   LazyConvTranspose3d, LazyLinear, UninitializedParameter)
from .lazy import (LazyBatchNorm1d, LazyBatchNorm2d, LazyBatchNorm3d, LazyInstanceNorm1d,  # noqa: F401
                   LazyInstanceNorm2d, LazyInstanceNorm3d, UninitializedBuffer)
from .layers import BatchNorm3d, Fold, InstanceNorm3d, Unfold  # noqa: F401
from .sync_batchnorm import SyncBatchNorm  # noqa: F401
from .layers import MultiLabelMarginLoss, TripletMarginWithDistanceLoss  # noqa: F401
from .layers import Bilinear, MaxUnpool1d, MaxUnpool2d  # noqa: F401
from .layers import EmbeddingBag, LocalResponseNorm, LPPool1d, LPPool2d  # noqa: F401
from .layers import AlphaDropout, FeatureAlphaDropout, RReLU  # noqa: F401
from .layers import (AdaptiveAvgPool1d, CircularPad1d, CircularPad2d, ConstantPad1d, ConstantPad2d,  # noqa: F401
                     Hardshrink, PReLU, ReflectionPad1d, ReflectionPad2d, ReplicationPad1d, ReplicationPad2d,
                     Softshrink, Tanhshrink, Threshold, ZeroPad1d, ZeroPad2d)
from .layers import (GaussianNLLLoss, HingeEmbeddingLoss, MultiLabelSoftMarginLoss, MultiMarginLoss,  # noqa: F401
                     PoissonNLLLoss, SoftMarginLoss, Upsample, UpsamplingBilinear2d, UpsamplingNearest2d)
from .layers import (TransformerEncoder, TransformerEncoderLayer, TransformerDecoder,  # noqa: F401
                     TransformerDecoderLayer, Transformer)
from .layers import (GELU, CrossEntropyLoss, Dropout, Embedding, Identity, L1Loss, LayerNorm, Linear,
                     MSELoss, NLLLoss, ReLU, RMSNorm, Sigmoid, SiLU, Tanh)
from .module import (Buffer, IncompatibleKeys, Module, ModuleDict, ModuleList, Parameter, ParameterDict,
                     ParameterList, RemovableHandle, Sequential, StateDictError)

__all__ = ["Module", "Parameter", "ParameterList", "ParameterDict", "ModuleList", "ModuleDict", "Sequential",
           "StateDictError", "IncompatibleKeys", "RemovableHandle", "Linear", "Embedding", "RMSNorm", "LayerNorm",
           "Dropout", "Identity", "GELU", "SiLU", "ReLU", "Tanh", "Sigmoid", "CrossEntropyLoss",
           "BCELoss", "BCEWithLogitsLoss", "Flatten", "Softmax", "NLLLoss", "MSELoss", "L1Loss", "functional", "init", "utils", "checkpoint",
           "Softplus", "LeakyReLU", "CosineSimilarity", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
           "MultiheadAttention", "ELU", "CELU", "SELU", "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid",
           "Mish", "LogSigmoid", "Softsign", "GLU", "Softmin", "LogSoftmax", "PairwiseDistance",
           "MarginRankingLoss", "TripletMarginLoss", "CosineEmbeddingLoss", "Unflatten", "BatchNorm1d",
           "BatchNorm2d", "GroupNorm", "Conv1d", "Conv2d", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d",
           "AdaptiveAvgPool2d", "RNN", "LSTM", "GRU", "TransformerEncoderLayer", "TransformerEncoder",
           "TransformerDecoderLayer", "TransformerDecoder", "Transformer",
           "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d", "SoftMarginLoss", "HingeEmbeddingLoss",
           "PoissonNLLLoss", "GaussianNLLLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss", "Threshold",
           "Hardshrink", "Softshrink", "Tanhshrink", "PReLU", "AdaptiveAvgPool1d", "ConstantPad1d", "ConstantPad2d",
           "ZeroPad1d", "ZeroPad2d", "ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d",
           "CircularPad1d", "CircularPad2d", "Dropout1d", "Dropout2d", "Dropout3d",
           "ConvTranspose1d", "ConvTranspose2d", "PixelShuffle", "PixelUnshuffle", "Softmax2d",
           "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "InstanceNorm1d", "InstanceNorm2d",
           "RNNCell", "LSTMCell", "GRUCell", "BatchNorm3d", "SyncBatchNorm", "InstanceNorm3d", "Unfold", "Fold",
           "MultiLabelMarginLoss", "TripletMarginWithDistanceLoss", "Bilinear", "MaxUnpool1d", "MaxUnpool2d",
           "LPPool1d", "LPPool2d", "LocalResponseNorm", "EmbeddingBag",
           "AlphaDropout", "FeatureAlphaDropout", "RReLU", "Conv3d", "ConvTranspose3d", "ChannelShuffle",
           "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d",
           "LazyConvTranspose3d", "UninitializedParameter", "CTCLoss", "ConstantPad3d", "ZeroPad3d",
           "ReflectionPad3d", "ReplicationPad3d", "CircularPad3d", "MaxPool3d", "AvgPool3d", "AdaptiveAvgPool3d",
           "AdaptiveMaxPool3d", "MaxUnpool3d", "LPPool3d", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
           "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "UninitializedBuffer",
           "LinearCrossEntropyLoss", "Buffer", "DataParallel", "FractionalMaxPool2d", "FractionalMaxPool3d",
           "AdaptiveLogSoftmaxWithLoss", "NLLLoss2d"]
