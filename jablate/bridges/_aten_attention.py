"""ATen scaled dot-product attention."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jablate.bridges._aten_table import register


def _attention(query, key, value, attn_mask=None, is_causal=False, scale=None, dropout_p=0.0):
    if dropout_p > 0:
        raise NotImplementedError(
            f"scaled_dot_product_attention with dropout_p={dropout_p} draws random masks; "
            "translate() lowers inference graphs. Pass dropout_p=0 outside training, or use "
            "jablate.bridges.torch.wrap(module) to run it in torch.")
    if query.ndim >= 3 and key.shape[-3] != query.shape[-3]:  # grouped-query attention
        rep = query.shape[-3] // key.shape[-3]
        key, value = jnp.repeat(key, rep, axis=-3), jnp.repeat(value, rep, axis=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = jnp.einsum("...qd,...kd->...qk", query, key) * scale
    keep = None
    if is_causal:
        keep = jnp.tril(jnp.ones((query.shape[-2], key.shape[-2]), bool))
    open_ = keep  # where a score can be finite, from the masks alone
    if attn_mask is not None:
        if attn_mask.dtype == jnp.bool_:
            keep = attn_mask if keep is None else keep & attn_mask
            open_ = keep
        else:
            scores = scores + attn_mask
            finite = attn_mask != -jnp.inf
            open_ = finite if open_ is None else open_ & finite
    if keep is not None:
        scores = jnp.where(keep, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    if open_ is not None:
        # Fully masked rows give 0, as torch does. Told from the masks, not from the
        # scores: the same rows for finite queries and keys, and the choice does not
        # depend on the input (deep_lift_shap has no rule for a choice that does).
        weights = jnp.where(jnp.any(open_, -1, keepdims=True), weights, 0)
    return jnp.einsum("...qk,...kd->...qd", weights, value), weights


@register("scaled_dot_product_attention")
def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    return _attention(query, key, value, attn_mask, is_causal, scale, dropout_p)[0]


@register("_scaled_dot_product_flash_attention_for_cpu")
def _sdpa_flash_cpu(query, key, value, dropout_p=0.0, is_causal=False, attn_mask=None,
                    scale=None):
    return _attention(query, key, value, attn_mask, is_causal, scale, dropout_p)[0], None


@register("_scaled_dot_product_attention_math")
def _sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
               dropout_mask=None, scale=None, enable_gqa=False):
    if attn_mask is not None and attn_mask.dtype == jnp.bool_:
        # Unlike the public op, ATen's math kernel adds a boolean mask as 0/1.
        attn_mask = attn_mask.astype(jnp.result_type(query))
    return _attention(query, key, value, attn_mask, is_causal, scale, dropout_p)
