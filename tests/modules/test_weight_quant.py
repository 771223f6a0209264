"""int8/int4/w8a8/int8-dynamic: round trip against a plain reference, kernels against dequantize + F.linear
(w8a8, int8-dynamic: against exact integer sums of the rounded activations)."""
import pytest
import torch
import torch.nn.functional as F

from audiocraft_patched.modules.matmul_forms import MatmulForms
from audiocraft_patched.modules.weight_quant import (QuantizedWeight, quantize_dynamic_input, quantize_rows,
                                                     quantize_transformer)

W = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
X = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(1))


def reference_dequantized(w: torch.Tensor, mode: str, group: int) -> torch.Tensor:
    """The textbook schemes, element by element: int8 symmetric per row, int4 asymmetric per group."""
    out = torch.empty_like(w)
    for i, row in enumerate(w.tolist()):
        if mode in ("int8", "w8a8", "int8-dynamic"):
            scale = max(abs(v) for v in row) / 127
            out[i] = torch.tensor([round(v / scale) * scale for v in row])
            continue
        for start in range(0, len(row), group):
            part = row[start:start + group]
            low, scale = min(part), (max(part) - min(part)) / 15
            out[i, start:start + group] = torch.tensor([low + min(15, max(0, round((v - low) / scale))) * scale
                                                        for v in part])
    return out


@pytest.mark.parametrize("mode", ["int8", "int4", "w8a8", "int8-dynamic"])
def test_round_trip_equals_the_reference(mode):
    q = QuantizedWeight.quantize(W, mode, group_size=8)
    expected = reference_dequantized(W, mode, 8)
    torch.testing.assert_close(q.dequantize(), expected, atol=1e-6, rtol=0)
    assert (q.dequantize() - W).abs().max() <= (0.6 if mode == "int4" else 0.05)  # the scheme's own error
    # int8: 1 byte a weight + a float32 scale a row; int4: half a byte + a float32 scale and zero a group
    assert q.nbytes() == (48 * 16 + 48 * 4 * 2 * 4 if mode == "int4" else 48 * 32 + 48 * 4)


def test_w8a8_is_int8_stored_column_major_and_rounds_activations_per_row():
    int8, w8a8 = QuantizedWeight.quantize(W, "int8"), QuantizedWeight.quantize(W, "w8a8")
    assert torch.equal(w8a8.qweight, int8.qweight) and torch.equal(w8a8.scales, int8.scales)
    assert w8a8.qweight.t().is_contiguous()  # `_int_mm`'s [K, N] layout
    flat = X.reshape(-1, 32)
    qx, scales = quantize_rows(flat)
    for i, row in enumerate(flat.tolist()):  # the textbook rounding, row by row
        scale = max(abs(v) for v in row) / 127
        assert qx[i].tolist() == [round(v / scale) for v in row] and abs(scales[i, 0].item() - scale) < 1e-9
    exact = [[sum(a * b for a, b in zip(xr, wr)) for wr in int8.qweight.tolist()] for xr in qx.tolist()]
    expected = torch.tensor(exact, dtype=torch.float64) * scales.double() * int8.scales.double()
    bias = torch.randn(48)
    torch.testing.assert_close(w8a8.linear(X, bias), (expected.float() + bias).reshape(3, 5, 48), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(w8a8[16:32].linear(X), w8a8.linear(X)[..., 16:32], atol=1e-6, rtol=0)
    graded = X.clone().requires_grad_()  # the float fallback: the same sums
    torch.testing.assert_close(w8a8.linear(graded, bias).detach(), w8a8.linear(X, bias), atol=1e-6, rtol=0)
    dense = F.linear(X, W)  # both roundings together: ~1% of the output's range
    assert (w8a8.linear(X) - dense).abs().max() < 0.02 * dense.abs().max()
    loaded = QuantizedWeight((48, 32), "w8a8", 128, torch.float32)
    loaded.load_state_dict(int8.state_dict())  # an int8 state dict loads into w8a8's layout
    assert loaded.qweight.t().is_contiguous() and torch.equal(loaded.linear(X), w8a8.linear(X))


def test_int8_dynamic_is_int8_with_torch_ao_activations():
    int8, dynamic = QuantizedWeight.quantize(W, "int8"), QuantizedWeight.quantize(W, "int8-dynamic")
    assert dynamic.state_dict().keys() == int8.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(dynamic.state_dict().values(), int8.state_dict().values()))
    x = X * 2 + 0.7  # an offset input: the zero point is not in the middle
    flat = x.reshape(-1, 32)
    q, scale, zero = quantize_dynamic_input(flat)
    values = flat.flatten().tolist()  # the textbook rounding over the whole input, in [0, 127]
    low, high = min(min(values), 0.0), max(max(values), 0.0)
    assert abs(scale.item() - (high - low) / 127) < 1e-6 * scale.item() and zero.item() == round(-low / scale.item())
    assert q.flatten().tolist() == [min(127, max(0, round(v / scale.item()) + zero.item())) for v in values]
    torch_scale, torch_zero = torch._choose_qparams_per_tensor(flat, True)  # torch.ao's choice, 7 bits
    assert abs(torch_scale - scale.item()) < 1e-6 * torch_scale and torch_zero == zero.item()
    exact = [[sum((a - zero.item()) * b for a, b in zip(xr, wr)) for wr in int8.qweight.tolist()] for xr in q.tolist()]
    expected = torch.tensor(exact, dtype=torch.float64) * scale * int8.scales.double()
    bias = torch.randn(48)
    want = (expected.float() + bias).reshape(3, 5, 48)
    torch.testing.assert_close(dynamic.linear(x, bias), want, atol=1e-5, rtol=1e-6)  # fbgemm's kernel
    graded = x.clone().requires_grad_()  # the float fallback: the same sums
    torch.testing.assert_close(dynamic.linear(graded, bias).detach(), want, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(dynamic[16:32].linear(x), dynamic.linear(x)[..., 16:32], atol=1e-6, rtol=0)
    assert dynamic.linear(x.bfloat16()).dtype == torch.bfloat16
    dense = F.linear(x, W)  # both roundings together: ~1% of the output's range
    assert (dynamic.linear(x) - dense).abs().max() < 0.02 * dense.abs().max()
    zeros = torch.zeros(2, 32)  # an all-zero input has no range: zero out, not a division by zero
    assert torch.equal(dynamic.linear(zeros), torch.zeros(2, 48))
    engine = torch.backends.quantized.engine
    dynamic._packed.clear()
    dynamic.linear(x)
    assert torch.backends.quantized.engine == engine  # packing names fbgemm without changing the global engine


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [8, 32])  # 32: torch's int4 kernel; 8: dequantize + F.linear
def test_kernel_product_equals_dequantize_then_linear(mode, dtype, group):
    q = QuantizedWeight.quantize(W, mode, group_size=group).to(dtype)
    bias = torch.randn(48).to(dtype)
    x = X.to(dtype)
    tol = dict(atol=1e-5, rtol=0) if dtype == torch.float32 else dict(atol=0.05, rtol=0.01)  # bf16: 8-bit mantissa
    torch.testing.assert_close(q.linear(x, bias), F.linear(x, q.dequantize(dtype), bias), **tol)
    for rows in (slice(16, 32), slice(4, 8)):  # int4: 16 rows take the kernel, 4 the dequantizing fallback
        torch.testing.assert_close(MatmulForms().linear(x, q[rows], bias[rows]),
                                   F.linear(x, q.dequantize(dtype)[rows], bias[rows]), **tol)
    assert q.dtype == dtype and q[4:8].shape == (4, 32)


def test_state_dict_round_trip_and_errors():
    q = QuantizedWeight.quantize(W, "int4", group_size=32)
    empty = QuantizedWeight((48, 32), "int4", 32, torch.float32)
    empty.linear(X)  # a layout made before loading must not survive it
    empty.load_state_dict(q.state_dict())
    assert sorted(q.state_dict()) == ["qweight", "scales", "zeros"]
    torch.testing.assert_close(empty.linear(X), q.linear(X))
    with pytest.raises(ValueError, match="'int2' is not supported; use one of int8, int4, w8a8, int8-dynamic"):
        QuantizedWeight.quantize(W, "int2")
    with pytest.raises(ValueError, match="group_size 24 does not divide the layer's 32 inputs"):
        QuantizedWeight.quantize(W, "int4", group_size=24)
    with pytest.raises(TypeError, match="contiguous rows"):
        q[::2]


def test_quantize_transformer_replaces_every_product_weight():
    from audiocraft_patched.modules.transformer import StreamingTransformer

    torch.manual_seed(0)
    transformer = StreamingTransformer(d_model=16, num_heads=2, num_layers=2, dim_feedforward=32,
                                       cross_attention=True, causal=True).eval()
    x, cond = torch.randn(2, 3, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        expected = transformer(x, cross_attention_src=cond)
        assert quantize_transformer(transformer, "int8") == 2 * (2 + 2 + 2)  # in_proj + out_proj per attention, FFN
        got = transformer(x, cross_attention_src=cond)
    assert not any(p.dim() == 2 for p in transformer.parameters())  # only norms and biases stay dense
    assert (got - expected).abs().max() < 0.05
    with pytest.raises(ValueError, match="already quantized"):
        quantize_transformer(transformer, "int8")


@pytest.mark.parametrize("capability, warns", [("AVX2", True), ("DEFAULT", True), ("AVX512", False)])
def test_w8a8_warns_where_int_mm_has_no_fast_kernel(monkeypatch, capability, warns):
    import warnings

    from audiocraft_patched.modules.transformer import StreamingTransformer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_transformer(StreamingTransformer(16, 2, 1, dim_feedforward=32), "w8a8")
        quantize_transformer(StreamingTransformer(16, 2, 1, dim_feedforward=32), "int8")  # never
    messages = [str(w.message) for w in caught if "w8a8" in str(w.message)]
    assert len(messages) == int(warns), messages
    if warns:
        assert capability in messages[0] and "quantize('int8-dynamic')" in messages[0]


@pytest.mark.parametrize("capability, warns", [("AVX2", True), ("AVX512", False)])
def test_weight_only_modes_warn_about_float32_activations_below_avx512(monkeypatch, capability, warns):
    import warnings

    from audiocraft_patched.modules.transformer import StreamingTransformer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode in ("int8", "int4"):
            quantize_transformer(StreamingTransformer(16, 2, 1, dim_feedforward=32), mode, group_size=8)
        for mode in ("int8", "int8-dynamic"):  # never: bfloat16 activations, or a kernel fast in float32
            dtype = torch.bfloat16 if mode == "int8" else torch.float32
            quantize_transformer(StreamingTransformer(16, 2, 1, dim_feedforward=32).to(dtype), mode)
    messages = [str(w.message) for w in caught if "float32 activations" in str(w.message)]
    assert len(messages) == 2 * int(warns), messages
    if warns:
        assert all("set_dtype('bf16')" in m and "'int8-dynamic'" in m for m in messages)


def test_int8_dynamic_packed_weights_follow_copies_loads_and_frees():
    import copy
    import gc

    from audiocraft_patched.modules import weight_quant

    q = QuantizedWeight.quantize(W, "int8-dynamic")
    expected = q.linear(X)
    twin = copy.deepcopy(q)
    del q
    gc.collect()  # the original's packed weight is freed with it; the copy packs its own
    torch.testing.assert_close(twin.linear(X), expected, atol=0, rtol=0)
    other = QuantizedWeight.quantize(-W, "int8-dynamic")
    twin.load_state_dict(other.state_dict())  # new values: packed again, not the old packing
    torch.testing.assert_close(twin.linear(X), -expected, atol=1e-5, rtol=0)
    handles = set(twin._packed.values())
    assert handles <= set(weight_quant._FBGEMM_PACKED)
    del twin
    gc.collect()
    assert not handles & set(weight_quant._FBGEMM_PACKED)
