"""train/rvq.py: the trainable RVQ learns codebooks, and its state loads into the inference quantizer."""
import torch

from audiocraft_patched.quantization.vq import ResidualVectorQuantizer
from audiocraft_patched.train.rvq import TrainableResidualVectorQuantizer


def test_trainable_rvq_learns_and_loads_into_inference_quantizer():
    torch.manual_seed(0)
    centers = torch.randn(16, 8) * 3

    def data():
        return (centers[torch.randint(16, (64,))] + 0.05 * torch.randn(64, 8)).T[None]  # [1, 8, 64]

    q = TrainableResidualVectorQuantizer(8, 2, bins=16, decay=0.8, threshold_ema_dead_code=0.1).train()
    first = q(data())[2].item()
    for _ in range(50):
        q(data())
    x = data()
    quantized, codes, commit = q.eval()(x)
    assert commit.item() < 0.05 * first
    inference = ResidualVectorQuantizer(8, 2, bins=16)
    inference.load_state_dict(q.state_dict())
    assert torch.equal(inference.encode(x), codes)
    assert torch.allclose(inference.decode(codes), quantized, atol=1e-5)
