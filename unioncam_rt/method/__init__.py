"""The CAM math, numpy only, shared by every engine: ops -> gradient maps -> masked
scoring -> UnionCAM fusion/selection -> methods registry."""

from .budget import Budget
from .cams import METHODS, MethodContext, MethodOptions, SaliencyBatch, UnionParts, finalize

__all__ = ["METHODS", "Budget", "MethodContext", "MethodOptions", "SaliencyBatch", "UnionParts", "finalize"]
