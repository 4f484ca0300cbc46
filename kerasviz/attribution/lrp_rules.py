"""LRP rules and the layer table: how relevance crosses one linear layer, and every other layer.

Relevance flows backwards through the model as the *gradient* of a modified backward pass
(the "gradient trick" of Zennit): each linear layer's gradient is replaced by its rule, so
what reaches a tensor is its relevance, not its gradient. This module holds the pieces:

- :class:`Rule` values (:class:`Epsilon`, :class:`Gamma`, :class:`AlphaBeta`, :class:`ZPlus`,
  :class:`Flat`, :class:`WSquare`, :class:`ZBox`): for one linear map ``z = f(x; W) + b`` and
  the relevance ``R`` of its outputs, ``rule.relevance`` returns the relevance of its inputs.
- :class:`LinearMap`: the bias-free linear map of a Dense or convolution layer, with its
  kernel and bias read from the layer's variables at call time (BatchNormalization that
  follows the layer folded in: canonization).
- :data:`LAYER_KINDS`, the rule table for every other layer, by type. It is the one place to
  extend: ``LAYER_KINDS[MyLayer] = "move"``.

Contributions of input ``i`` to output ``j`` are ``z_ij = x_i w_ij``; ``(.)^+`` and ``(.)^-``
are the positive and negative parts. Denominators that can change sign are stabilized as in
Zennit, ``z + s * sign(z)`` with ``sign(0) = 1``; a zero denominator passes no relevance.

Reference: Montavon et al., "Layer-wise relevance propagation: an overview" (2019).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import keras
import tensorflow as tf
from keras import ops

from kerasviz._checks import number
from kerasviz._layers import CONV_TYPES, DEPTHWISE_TYPES, SEPARABLE_TYPES, TRANSPOSE_TYPES

#: Added (with the denominator's sign) to denominators that may vanish, as Zennit does.
STABILIZER = 1e-6


def sign0(z: tf.Tensor) -> tf.Tensor:
    """``sign(z)`` with ``sign(0) = 1``."""
    return tf.where(z >= 0, tf.ones_like(z), -tf.ones_like(z))


def stabilize(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """``z + epsilon * sign0(z)``: away from zero by ``epsilon``, sign kept."""
    return z + epsilon * sign0(z) if epsilon else z


def divide(r: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    """``r / z``, and 0 where ``z == 0``."""
    return tf.math.divide_no_nan(r, z)


def _pos(t):
    return tf.nn.relu(t)


def _neg(t):
    return tf.minimum(t, 0.0)


# ---------------------------------------------------------------------------------------------
# Linear maps


@dataclass(eq=False)
class LinearMap:
    """One bias-free linear map ``f(x; kernel)`` and its bias, all float32.

    Attributes:
        fn: ``fn(x, kernel) -> z``, linear in ``x`` (and in ``kernel``).
        kernel: the kernel, read from the layer's variables (BatchNormalization folded in).
        bias: a tensor that broadcasts against ``z``, or None.
    """

    fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
    kernel: tf.Tensor
    bias: tf.Tensor | None = None

    def __call__(self, x: tf.Tensor, kernel: tf.Tensor | None = None) -> tf.Tensor:
        """``f(x; kernel)`` without the bias (``kernel`` defaults to the map's own)."""
        return self.fn(x, self.kernel if kernel is None else kernel)

    def forward(self, x: tf.Tensor) -> tf.Tensor:
        """``f(x; W) + b``: the layer's output before its activation."""
        z = self(x)
        return z if self.bias is None else z + self.bias

    def bias_part(self, part: Callable | None = None) -> Any:
        """``part(b)`` (or ``b``), or 0.0 when the map has no bias."""
        if self.bias is None:
            return 0.0
        return self.bias if part is None else part(self.bias)

    def terms(self, pairs: list[tuple[tf.Tensor, tf.Tensor]]):
        """``[f(x_k; W_k)]`` for ``pairs = [(x_k, W_k)]``, and ``vjp(k, s)``: ``s`` pulled back
        through ``f(.; W_k)`` (the transposed map; it does not depend on ``x_k``)."""
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            for x, _ in pairs:
                tape.watch(x)
            outs = [self(x, k) for x, k in pairs]

        def vjp(k: int, s: tf.Tensor) -> tf.Tensor:
            return tape.gradient(outs[k], pairs[k][0], output_gradients=s)

        return outs, vjp


def _f32(value: Any) -> tf.Tensor:
    return tf.cast(ops.convert_to_tensor(value), tf.float32)


def _bias(layer: Any, rank: int) -> tf.Tensor | None:
    if not getattr(layer, "use_bias", False) or getattr(layer, "bias", None) is None:
        return None
    bias = _f32(layer.bias)
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return tf.reshape(bias, [1, -1] + [1] * (rank - 2))
    return bias


def _conv_fn(layer: Any) -> Callable:
    if isinstance(layer, TRANSPOSE_TYPES):
        return lambda x, k: ops.conv_transpose(
            x,
            k,
            strides=list(layer.strides),
            padding=layer.padding,
            output_padding=layer.output_padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if isinstance(layer, DEPTHWISE_TYPES):
        return lambda x, k: ops.depthwise_conv(
            x,
            k,
            strides=layer.strides,
            padding=layer.padding,
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    if layer.padding == "causal":
        pad = layer._compute_causal_padding()
        return lambda x, k: ops.conv(
            ops.pad(x, pad),
            k,
            strides=list(layer.strides),
            padding="valid",
            dilation_rate=layer.dilation_rate,
            data_format=layer.data_format,
        )
    return layer.convolution_op


def _fold(kernel, bias, scale, shift, layer: Any, rank: int, pointwise: bool = False):
    """Kernel and bias of ``BN(layer(x))``: output channel ``c`` scaled by ``scale[c]``."""
    if isinstance(layer, DEPTHWISE_TYPES) and not pointwise:  # (..., in, mult): ch in*m + k
        kernel = kernel * tf.reshape(scale, tf.shape(kernel)[-2:])
    elif isinstance(layer, TRANSPOSE_TYPES):  # kernel (..., out, in)
        kernel = kernel * tf.reshape(scale, [-1, 1])
    else:
        kernel = kernel * scale
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    shape = [1, -1] + [1] * (rank - 2) if channels_first else [-1]
    new_bias = tf.reshape(shift, shape)
    if bias is not None:
        new_bias = new_bias + bias * tf.reshape(scale, shape)
    return kernel, new_bias


def batchnorm_affine(bn: Any) -> tuple[tf.Tensor, tf.Tensor]:
    """``(scale, shift)`` of an inference-mode BatchNormalization, ``y = scale * x + shift``."""
    scale = tf.math.rsqrt(_f32(bn.moving_variance) + bn.epsilon)
    if bn.scale:
        scale = scale * _f32(bn.gamma)
    shift = -_f32(bn.moving_mean) * scale
    if bn.center:
        shift = shift + _f32(bn.beta)
    return scale, shift


def linear_maps(layer: Any, rank: int, bn: Any = None) -> list[LinearMap]:
    """The linear map(s) of a Dense or convolution layer, read from its variables now.

    A separable convolution is two maps (depthwise, then pointwise), each with the rule; its
    composed kernel's positive part is not the composition of the parts' positive parts.
    ``bn``, a BatchNormalization applied to the layer's output, is folded into the last map.
    ``rank`` is the rank of the layer's input, batch included.
    """
    if getattr(layer, "quantization_mode", None):
        raise ValueError(
            "Expected float layers for LRP. Received: layer "
            f"{layer.name!r} quantized as {layer.quantization_mode!r}."
        )
    if isinstance(layer, keras.layers.Dense):
        maps = [LinearMap(lambda x, k: ops.matmul(x, k), _f32(layer.kernel), _bias(layer, rank))]
    elif isinstance(layer, SEPARABLE_TYPES):
        depthwise = LinearMap(
            lambda x, k: ops.depthwise_conv(
                x,
                k,
                strides=layer.strides,
                padding=layer.padding,
                dilation_rate=layer.dilation_rate,
                data_format=layer.data_format,
            ),
            _f32(layer.depthwise_kernel),
        )
        pointwise = LinearMap(
            lambda x, k: ops.conv(x, k, strides=1, padding="valid", data_format=layer.data_format),
            _f32(layer.pointwise_kernel),
            _bias(layer, rank),
        )
        maps = [depthwise, pointwise]
    else:
        maps = [LinearMap(_conv_fn(layer), _f32(layer.kernel), _bias(layer, rank))]
    if bn is not None:
        last = maps[-1]
        scale, shift = batchnorm_affine(bn)
        pointwise = isinstance(layer, SEPARABLE_TYPES)
        last.kernel, last.bias = _fold(last.kernel, last.bias, scale, shift, layer, rank, pointwise)
    return maps


def channel_axis(layer: Any, rank: int) -> int:
    """The output-channel axis (non-negative) of a Dense or convolution layer's output."""
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return 1
    return rank - 1


# ---------------------------------------------------------------------------------------------
# Rules


@dataclass(frozen=True)
class Rule:
    """How relevance crosses one linear layer. Subclasses are small frozen values.

    ``relevance(lin, x, z, r, bounds, nonneg)`` gets the layer's input ``x`` (float32), its
    output before the activation ``z = lin.forward(x)``, the relevance ``r`` of ``z``, the
    input's ``(low, high)`` bounds (or None) and whether ``x >= 0`` is known; it returns the
    relevance of ``x``.
    """

    name: ClassVar[str] = ""
    #: Names of the keyword arguments of :func:`kerasviz.lrp` this rule takes.
    params: ClassVar[tuple[str, ...]] = ()
    #: The rule needs the value range of its input (z^B).
    needs_bounds: ClassVar[bool] = False

    def relevance(self, lin: LinearMap, x, z, r, bounds, nonneg: bool):  # pragma: no cover
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon: ``R_i = sum_j z_ij / (z_j + epsilon sign(z_j)) R_j``, bias in ``z_j``.

    ``epsilon = 0`` is LRP-0, which equals gradient x input on ReLU networks. The bias and
    epsilon absorb relevance, so it is conserved only for bias-free layers and epsilon -> 0.
    """

    epsilon: float = 1e-6
    name: ClassVar[str] = "epsilon"
    params: ClassVar[tuple[str, ...]] = ("epsilon",)

    def __post_init__(self):
        number(self.epsilon, "epsilon", low=0)

    def relevance(self, lin, x, z, r, bounds, nonneg):
        s = divide(r, stabilize(z, self.epsilon))
        _, vjp = lin.terms([(x, lin.kernel)])
        return x * vjp(0, s)


@dataclass(frozen=True)
class Gamma(Rule):
    """LRP-gamma: contributions of the output's own sign favoured by ``gamma``.

    For ``z_j > 0``: ``R_i = sum_j (z_ij + gamma z_ij^+) / (z_j + gamma (sum_i z_ij^+ +
    b_j^+)) R_j``; for ``z_j < 0`` the same with negative parts (Zennit's sign-aware form;
    on ReLU networks only ``z_j > 0`` carries relevance, which is Montavon et al.'s rule).
    The denominator has the sign of ``z_j`` and is at least as large; stabilized by
    :data:`STABILIZER`.
    """

    gamma: float = 0.25
    name: ClassVar[str] = "gamma"
    params: ClassVar[tuple[str, ...]] = ("gamma",)

    def __post_init__(self):
        number(self.gamma, "gamma", low=0)

    def relevance(self, lin, x, z, r, bounds, nonneg):
        w, g = lin.kernel, self.gamma
        up, down = w + g * _pos(w), w + g * _neg(w)
        bias_up = lin.bias_part() + g * lin.bias_part(_pos)
        bias_down = lin.bias_part() + g * lin.bias_part(_neg)
        r_up = tf.where(z > 0, r, tf.zeros_like(r))
        r_down = tf.where(z < 0, r, tf.zeros_like(r))
        if nonneg:
            (a, c), vjp = lin.terms([(x, up), (x, down)])
            s_up = divide(r_up, stabilize(a + bias_up, STABILIZER))
            s_down = divide(r_down, stabilize(c + bias_down, STABILIZER))
            return x * (vjp(0, s_up) + vjp(1, s_down))
        xp, xn = _pos(x), _neg(x)
        # z_j > 0: x^+ (w + g w^+) + x^- (w + g w^-);  z_j < 0: x^+ (w + g w^-) + x^- (w + g w^+).
        (a, b, c, d), vjp = lin.terms([(xp, up), (xn, down), (xp, down), (xn, up)])
        s_up = divide(r_up, stabilize(a + b + bias_up, STABILIZER))
        s_down = divide(r_down, stabilize(c + d + bias_down, STABILIZER))
        return xp * (vjp(0, s_up) + vjp(2, s_down)) + xn * (vjp(1, s_up) + vjp(3, s_down))


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta: ``R_i = sum_j (alpha z_ij^+ / z_j^+ - beta z_ij^- / z_j^-) R_j`` with
    ``z_j^+ = sum_i z_ij^+ + b_j^+`` (and ``^-`` alike). Requires ``alpha - beta = 1``,
    ``beta >= 0``."""

    alpha: float = 2.0
    beta: float = 1.0
    name: ClassVar[str] = "alpha_beta"
    params: ClassVar[tuple[str, ...]] = ("alpha", "beta")

    def __post_init__(self):
        number(self.alpha, "alpha", low=1)
        number(self.beta, "beta", low=0)
        if abs(self.alpha - self.beta - 1) > 1e-9:
            raise ValueError(
                "Expected `alpha` - `beta` = 1 (relevance is conserved only then). "
                f"Received: alpha={self.alpha!r}, beta={self.beta!r} (alpha - beta = "
                f"{self.alpha - self.beta:g})."
            )

    def relevance(self, lin, x, z, r, bounds, nonneg):
        w = lin.kernel
        wp, wn = _pos(w), _neg(w)
        if nonneg:
            pairs = [(x, wp), (x, wn)] if self.beta else [(x, wp)]
            outs, vjp = lin.terms(pairs)
            sp = divide(self.alpha * r, outs[0] + lin.bias_part(_pos))
            result = vjp(0, sp)
            if self.beta:
                sn = divide(self.beta * r, outs[1] + lin.bias_part(_neg))
                result = result - vjp(1, sn)
            return x * result
        xp, xn = _pos(x), _neg(x)
        # (x w)^+ = x^+ w^+ + x^- w^-;  (x w)^- = x^+ w^- + x^- w^+.
        pairs = [(xp, wp), (xn, wn)] + ([(xp, wn), (xn, wp)] if self.beta else [])
        outs, vjp = lin.terms(pairs)
        sp = divide(self.alpha * r, outs[0] + outs[1] + lin.bias_part(_pos))
        result = xp * vjp(0, sp) + xn * vjp(1, sp)
        if self.beta:
            sn = divide(self.beta * r, outs[2] + outs[3] + lin.bias_part(_neg))
            result = result - (xp * vjp(2, sn) + xn * vjp(3, sn))
        return result


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z+: ``R_i = sum_j z_ij^+ / (sum_i' z_i'j^+ + b_j^+) R_j`` (positive contributions).

    Equal to alpha-beta with ``alpha=1, beta=0``. Conserving where an output with
    relevance has a positive contribution, as in ReLU networks (only active units carry
    relevance there); with swish or linear bottlenecks (EfficientNet, MobileNetV2) the
    relevance of outputs without one is dropped.
    """

    name: ClassVar[str] = "zplus"

    def relevance(self, lin, x, z, r, bounds, nonneg):
        w = lin.kernel
        if nonneg:
            (zp,), vjp = lin.terms([(x, _pos(w))])
            return x * vjp(0, divide(r, zp + lin.bias_part(_pos)))
        xp, xn = _pos(x), _neg(x)
        (zp, zn), vjp = lin.terms([(xp, _pos(w)), (xn, _neg(w))])
        s = divide(r, zp + zn + lin.bias_part(_pos))
        return xp * vjp(0, s) + xn * vjp(1, s)


@dataclass(frozen=True)
class Flat(Rule):
    """Flat: every input in an output's receptive field gets an equal share, ``R_i = sum_j
    R_j / |field_j|``. Meant for the first layer; ignores the input and the weights."""

    name: ClassVar[str] = "flat"

    def relevance(self, lin, x, z, r, bounds, nonneg):
        ones = tf.ones_like(x)
        (count,), vjp = lin.terms([(ones, tf.ones_like(lin.kernel))])
        return vjp(0, divide(r, count))


@dataclass(frozen=True)
class WSquare(Rule):
    """w^2: ``R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j``. Meant for the first layer."""

    name: ClassVar[str] = "wsquare"

    def relevance(self, lin, x, z, r, bounds, nonneg):
        w = lin.kernel
        (zw,), vjp = lin.terms([(tf.ones_like(x), w * w)])
        return vjp(0, divide(r, zw))


@dataclass(frozen=True)
class ZBox(Rule):
    """z^B (bounded input, ``l_i <= x_i <= h_i``): contributions ``x_i w_ij - l_i w_ij^+ -
    h_i w_ij^-``, all non-negative, normalized per output. For the input layer; the bounds
    come from ``value_range=``, carried through preprocessing layers (Rescaling, padding)."""

    name: ClassVar[str] = "zbox"
    needs_bounds: ClassVar[bool] = True

    def relevance(self, lin, x, z, r, bounds, nonneg):
        low, high = bounds
        w = lin.kernel
        (zx, zl, zh), vjp = lin.terms([(x, w), (low, _pos(w)), (high, _neg(w))])
        s = divide(r, zx - zl - zh)
        return x * vjp(0, s) - low * vjp(1, s) - high * vjp(2, s)


#: Rule classes by name, as ``composite=`` and composite mappings accept them.
RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (Epsilon, Gamma, AlphaBeta, ZPlus, Flat, WSquare, ZBox)
}


# ---------------------------------------------------------------------------------------------
# The layer table

#: How each layer type passes relevance (and, for DeepLIFT, multipliers). Looked up along the
#: type's MRO, so subclasses inherit their base's kind. Extend it for your own layers:
#:
#: - ``"linear"``: Dense and convolutions; gets the composite's rule (built-in types only).
#: - ``"batchnorm"``: folded into the linear layer before it, else like ``"affine"``.
#: - ``"affine"``: elementwise affine maps (Rescaling, Normalization): relevance passes as
#:   is; DeepLIFT keeps the gradient.
#: - ``"activation"``: elementwise nonlinearities (and normalizations over a sample, their
#:   statistics held constant): relevance passes as is; DeepLIFT uses ``dy / dx``.
#: - ``"move"``: layers that only move, copy or drop values (Flatten, padding, Concatenate,
#:   Dropout): the plain gradient routes relevance.
#: - ``"max"``: max pooling: the winner takes all.
#: - ``"sum"``: linear sums and means with positive weights (average pooling, Add): relevance
#:   by contribution ``x_i / z``, the denominator stabilized by ``1e-6 sign(z) sum |x_i|``.
#: - ``"multiply"``: gating, ``x * g``: all relevance to the signal, none to the gates
#:   (sigmoid outputs; else inputs computed from the signal; else broadcast ones). DeepLIFT
#:   splits the product exactly.
#:
#: Example (a custom layer that is the identity at inference):
#:     >>> from kerasviz.attribution import lrp_rules
#:     >>> lrp_rules.LAYER_KINDS[MyNoise] = "move"
LAYER_KINDS: dict[type, str] = {
    keras.layers.Dense: "linear",
    keras.layers.BatchNormalization: "batchnorm",
    keras.layers.Rescaling: "affine",
    keras.layers.Normalization: "affine",
    keras.layers.ReLU: "activation",
    keras.layers.LeakyReLU: "activation",
    keras.layers.PReLU: "activation",
    keras.layers.ELU: "activation",
    keras.layers.Activation: "activation",
    keras.layers.Flatten: "move",
    keras.layers.Reshape: "move",
    keras.layers.Permute: "move",
    keras.layers.RepeatVector: "move",
    keras.layers.Concatenate: "move",
    keras.layers.Dropout: "move",
    keras.layers.SpatialDropout1D: "move",
    keras.layers.SpatialDropout2D: "move",
    keras.layers.SpatialDropout3D: "move",
    keras.layers.GaussianNoise: "move",
    keras.layers.GaussianDropout: "move",
    keras.layers.AlphaDropout: "move",
    keras.layers.ActivityRegularization: "move",
    keras.layers.Identity: "move",
    keras.layers.ZeroPadding1D: "move",
    keras.layers.ZeroPadding2D: "move",
    keras.layers.ZeroPadding3D: "move",
    keras.layers.Cropping1D: "move",
    keras.layers.Cropping2D: "move",
    keras.layers.Cropping3D: "move",
    keras.layers.UpSampling1D: "move",
    keras.layers.UpSampling2D: "move",
    keras.layers.UpSampling3D: "move",
    keras.layers.MaxPooling1D: "max",
    keras.layers.MaxPooling2D: "max",
    keras.layers.MaxPooling3D: "max",
    keras.layers.GlobalMaxPooling1D: "max",
    keras.layers.GlobalMaxPooling2D: "max",
    keras.layers.GlobalMaxPooling3D: "max",
    keras.layers.Maximum: "max",
    keras.layers.Minimum: "max",
    keras.layers.AveragePooling1D: "sum",
    keras.layers.AveragePooling2D: "sum",
    keras.layers.AveragePooling3D: "sum",
    keras.layers.GlobalAveragePooling1D: "sum",
    keras.layers.GlobalAveragePooling2D: "sum",
    keras.layers.GlobalAveragePooling3D: "sum",
    keras.layers.Add: "sum",
    keras.layers.Subtract: "sum",
    keras.layers.Average: "sum",
    keras.layers.Multiply: "multiply",
    # Normalizations over a sample's own values, their statistics held constant: each output
    # then depends on its own input only, as for an activation (Ali et al., 2022).
    keras.layers.LayerNormalization: "activation",
    keras.layers.GroupNormalization: "activation",
    keras.layers.UnitNormalization: "activation",
}
LAYER_KINDS.update({t: "linear" for t in CONV_TYPES})

#: Kinds of layers that keras.applications defines but Keras does not export, by class name
#: (used when a type has no entry in :data:`LAYER_KINDS`).
NAMED_KINDS: dict[str, str] = {
    "CustomScaleLayer": "sum",  # InceptionResNetV2: x + scale * residual
    "LayerScale": "affine",  # ConvNeXt: x * gamma per channel
    "StochasticDepth": "move",  # ConvNeXt: the identity at inference
}

#: Kinds of operation nodes of a functional graph that are not layers (``keras.ops`` calls
#: on symbolic tensors), by class name.
OP_KINDS: dict[str, str] = {
    "Add": "sum",
    "Subtract": "sum",
    "Multiply": "multiply",
    "Relu": "activation",
    "Relu6": "activation",
    "LeakyRelu": "activation",
    "Sigmoid": "activation",
    "Silu": "activation",
    "Tanh": "activation",
    "Gelu": "activation",
    "Reshape": "move",
    "Concatenate": "move",
}

KINDS = ("linear", "batchnorm", "affine", "activation", "move", "max", "sum", "multiply")

#: Activations whose output is never negative, and those that are monotone (value bounds
#: pass through them), by name.
NONNEGATIVE = {"relu", "relu6", "sigmoid", "hard_sigmoid", "softplus", "exponential"}
MONOTONE = NONNEGATIVE | {"linear", "leaky_relu", "elu", "selu", "tanh", "softsign", "hard_tanh"}
#: Activations that make a gate (the input of a Multiply that only scales the other one).
GATES = {"sigmoid", "hard_sigmoid"}
#: Activations that are not elementwise (so not passed through).
NOT_ELEMENTWISE = {"softmax", "log_softmax"}


def layer_kind(layer: Any) -> str | None:
    """The layer's kind in :data:`LAYER_KINDS` (or :data:`OP_KINDS`), None when it has none."""
    if not isinstance(layer, keras.layers.Layer):
        return OP_KINDS.get(type(layer).__name__)
    for cls in type(layer).__mro__:
        kind = LAYER_KINDS.get(cls)
        if kind is not None:
            break
    else:
        kind = NAMED_KINDS.get(type(layer).__name__)
        if kind is None:
            return None
    if kind not in KINDS:
        raise ValueError(
            f"Expected kerasviz.attribution.lrp_rules.LAYER_KINDS to map {type(layer).__name__} "
            f"to one of {list(KINDS)}. Received: {kind!r}."
        )
    if kind == "linear" and not isinstance(layer, (keras.layers.Dense, *CONV_TYPES)):
        return None  # a custom linear layer would need its own map
    if kind == "activation" and activation_name(layer) in NOT_ELEMENTWISE:
        return None
    if isinstance(layer, keras.layers.UpSampling2D | keras.layers.UpSampling3D):
        return "move" if getattr(layer, "interpolation", "nearest") == "nearest" else "sum"
    return kind


def activation_name(layer: Any) -> str | None:
    """The name of a layer's activation (``ReLU`` layers are ``"relu"``), or None."""
    if isinstance(layer, keras.layers.ReLU):
        return "relu" if not layer.negative_slope else "leaky_relu"
    if isinstance(layer, keras.layers.LeakyReLU):
        return "leaky_relu"
    if isinstance(layer, keras.layers.ELU):
        return "elu"
    if not isinstance(layer, keras.layers.Layer):
        return {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid"}.get(type(layer).__name__)
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def nonnegative_output(layer: Any) -> bool:
    """True when the layer's activation never outputs a negative value."""
    if isinstance(layer, keras.layers.ReLU):
        return not layer.negative_slope and float(layer.threshold) >= 0
    return activation_name(layer) in NONNEGATIVE


def is_linear_activation(layer: Any) -> bool:
    """True for a Dense/convolution layer without an activation (or a linear one)."""
    return activation_name(layer) in (None, "linear")
