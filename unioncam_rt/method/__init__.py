"""The CAM math, numpy only, shared by every engine: ops -> gradient maps -> masked
scoring -> UnionCAM fusion/selection -> methods registry."""

from .cams import METHODS, MethodContext, MethodOptions, SaliencyBatch, UnionParts, finalize

__all__ = ["METHODS", "MethodContext", "MethodOptions", "SaliencyBatch", "UnionParts", "finalize"]
