"""Backward rules of element-wise operators (activations, arithmetic with broadcasting)."""

from __future__ import annotations

import math

import numpy as np

from ..onnx_graph import TensorProto, attributes
from .context import Context, fail


def unary_rule(derivative):
    """Rule for ``y = f(x)`` with ``dx = derivative(ctx, x, y, g, attrs)``."""

    def rule(ctx: Context, node, grads):
        x, y = node.input[0], node.output[0]
        if not ctx.needs(x):
            return {}
        return {x: derivative(ctx, x, y, grads[0], attributes(node))}

    return rule


def passthrough_rule(ctx, node, grads):
    return {node.input[0]: grads[0]} if ctx.needs(node.input[0]) else {}


def zero_rule(ctx, node, grads):
    return {}


def d_relu(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.mask(e.op("Greater", [x, e.const(0.0)]))])


def d_leaky_relu(ctx, x, y, g, attrs):
    e = ctx.emit
    alpha = attrs.get("alpha", 0.01)
    return e.op("Where", [e.op("Greater", [x, e.const(0.0)]), g, e.scale(g, alpha)])


def d_elu(ctx, x, y, g, attrs):
    e = ctx.emit
    alpha = attrs.get("alpha", 1.0)
    return e.op("Where", [e.op("Greater", [x, e.const(0.0)]), g, e.op("Mul", [g, e.op("Add", [y, e.const(alpha)])])])


def d_sigmoid(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.op("Mul", [y, e.op("Sub", [e.const(1.0), y])])])


def d_tanh(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.op("Sub", [e.const(1.0), e.op("Mul", [y, y])])])


def d_softplus(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Mul", [g, e.op("Sigmoid", [x])])


def d_hard_sigmoid(ctx, x, y, g, attrs):
    # torch's hardsigmoid_backward: alpha * g strictly inside the linear part
    e = ctx.emit
    alpha, beta = attrs.get("alpha", 0.2), attrs.get("beta", 0.5)
    t = e.op("Add", [e.scale(x, alpha), e.const(beta)])
    inside = e.op("And", [e.op("Greater", [t, e.const(0.0)]), e.op("Less", [t, e.const(1.0)])])
    return e.op("Mul", [e.scale(g, alpha), e.mask(inside)])


def d_hard_swish(ctx, x, y, g, attrs):
    # torch's hardswish_backward: 0 for x < -3; g * (x / 3 + 0.5) for x <= 3; g above
    e = ctx.emit
    middle = e.op("Mul", [g, e.op("Add", [e.scale(x, 1.0 / 3.0), e.const(0.5)])])
    upper = e.op("Where", [e.op("LessOrEqual", [x, e.const(3.0)]), middle, g])
    return e.op("Where", [e.op("Less", [x, e.const(-3.0)]), e.const(0.0), upper])


def d_exp(ctx, x, y, g, attrs):
    return ctx.emit.op("Mul", [g, y])


def d_log(ctx, x, y, g, attrs):
    return ctx.emit.op("Div", [g, x])


def d_sqrt(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Div", [e.scale(g, 0.5), y])


def d_reciprocal(ctx, x, y, g, attrs):
    e = ctx.emit
    return e.op("Neg", [e.op("Mul", [g, e.op("Mul", [y, y])])])


def d_neg(ctx, x, y, g, attrs):
    return ctx.emit.op("Neg", [g])


def d_abs(ctx, x, y, g, attrs):
    return ctx.emit.op("Mul", [g, ctx.emit.op("Sign", [x])])


def d_erf(ctx, x, y, g, attrs):
    e = ctx.emit
    gauss = e.op("Exp", [e.op("Neg", [e.op("Mul", [x, x])])])
    return e.op("Mul", [g, e.scale(gauss, 2.0 / math.sqrt(math.pi))])


def d_gelu(ctx, x, y, g, attrs):
    e = ctx.emit
    if attrs.get("approximate", b"none") not in (b"none", "none"):
        # tanh form: 0.5 x (1 + tanh(u)), u = c (x + 0.044715 x^3)
        c = math.sqrt(2.0 / math.pi)
        x2 = e.op("Mul", [x, x])
        u = e.scale(e.op("Add", [x, e.scale(e.op("Mul", [x2, x]), 0.044715)]), c)
        t = e.op("Tanh", [u])
        du = e.scale(e.op("Add", [e.const(1.0), e.scale(x2, 3 * 0.044715)]), c)
        sech2 = e.op("Sub", [e.const(1.0), e.op("Mul", [t, t])])
        d = e.op("Add", [e.scale(e.op("Add", [e.const(1.0), t]), 0.5),
                         e.op("Mul", [e.scale(x, 0.5), e.op("Mul", [sech2, du])])])
        return e.op("Mul", [g, d])
    cdf = e.scale(e.op("Add", [e.const(1.0), e.op("Erf", [e.scale(x, 1.0 / math.sqrt(2.0))])]), 0.5)
    pdf = e.scale(e.op("Exp", [e.scale(e.op("Mul", [x, x]), -0.5)]), 1.0 / math.sqrt(2.0 * math.pi))
    return e.op("Mul", [g, e.op("Add", [cdf, e.op("Mul", [x, pdf])])])


def clip_rule(ctx, node, grads):
    x = node.input[0]
    if not ctx.needs(x):
        return {}
    e, attrs = ctx.emit, attributes(node)
    low = ctx.const_input(node, 1, "min") if len(node.input) > 1 else attrs.get("min")
    high = ctx.const_input(node, 2, "max") if len(node.input) > 2 else attrs.get("max")
    inside = None
    for bound, op in ((low, "Greater"), (high, "Less")):
        if bound is None:
            continue
        test = e.op(op, [x, e.const(float(np.asarray(bound)))])
        inside = test if inside is None else e.op("And", [inside, test])
    return {x: grads[0] if inside is None else e.op("Mul", [grads[0], e.mask(inside)])}


def cast_rule(ctx, node, grads):
    if attributes(node).get("to") not in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16):
        return {}
    return passthrough_rule(ctx, node, grads)




def binary_rule(ctx: Context, node, grads):
    a, b = node.input[0], node.input[1]
    g, y = grads[0], node.output[0]
    e, op = ctx.emit, node.op_type
    out_shape = ctx.shape(y)
    result = {}
    if ctx.needs(a):
        if op in ("Add", "Sub"):
            ga = g
        elif op == "Mul":
            ga = e.op("Mul", [g, b])
        elif op == "Div":
            ga = e.op("Div", [g, b])
        else:  # Pow
            if ctx.needs(b):
                fail(node, "only a constant exponent is supported")
            exponent = e.op("Sub", [b, e.const(1.0)])
            ga = e.op("Mul", [g, e.op("Mul", [b, e.op("Pow", [a, exponent])])])
        result[a] = ctx.unbroadcast(ga, out_shape, a)
    if ctx.needs(b):
        if op == "Add":
            gb = g
        elif op == "Sub":
            gb = e.op("Neg", [g])
        elif op == "Mul":
            gb = e.op("Mul", [g, a])
        elif op == "Div":
            gb = e.op("Neg", [e.op("Div", [e.op("Mul", [g, y]), b])])
        else:
            fail(node, "only a constant exponent is supported")
        grad = ctx.unbroadcast(gb, out_shape, b)
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    return result


def variadic_sum_rule(ctx: Context, node, grads):
    e, out_shape = ctx.emit, ctx.shape(node.output[0])
    g = grads[0] if node.op_type == "Sum" else e.scale(grads[0], 1.0 / len(node.input))
    result: dict[str, str] = {}
    for name in node.input:
        if ctx.needs(name):
            grad = ctx.unbroadcast(g, out_shape, name)
            result[name] = e.op("Add", [result[name], grad]) if name in result else grad
    return result


def where_rule(ctx: Context, node, grads):
    cond, a, b = node.input
    e, out_shape, zero = ctx.emit, ctx.shape(node.output[0]), ctx.emit.const(0.0)
    result = {}
    if ctx.needs(a):
        result[a] = ctx.unbroadcast(e.op("Where", [cond, grads[0], zero]), out_shape, a)
    if ctx.needs(b):
        grad = ctx.unbroadcast(e.op("Where", [cond, zero, grads[0]]), out_shape, b)
        result[b] = e.op("Add", [result[b], grad]) if b in result else grad
    return result


def expand_rule(ctx: Context, node, grads):
    x = node.input[0]
    return {x: ctx.unbroadcast(grads[0], ctx.shape(node.output[0]), x)} if ctx.needs(x) else {}
