"""Our DDIM loop against diffusers' DDIMScheduler driving the same denoiser, one chunk at a time.

The diffusion policy samples with its own loop over diffusers' coefficients (robotrl/policies/diffusion.py)
only because it is measured faster here and traces into one ONNX graph; tests/test_diffusion.py checks
that both give the same chunk. Also times the exported graph through onnxruntime (the bundle's path).
Prints the ratio of each against diffusers, measured in the same run.

    python bench/bench_diffusion_sampler.py --calls 300
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from robotrl.policies.diffusion import DiffusionConfig, DiffusionPolicy, ddim_scheduler


def median_ms(call: Callable[[], object], calls: int) -> float:
    for _ in range(max(5, calls // 10)):
        call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return 1e3 * float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--steps", type=int, default=8, help="DDIM steps")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = DiffusionConfig(inference_steps=args.steps)
    policy = DiffusionPolicy(39, 4, config).eval()
    obs = torch.randn(args.batch, 39)
    noise = torch.randn(args.batch, *policy.noise_shape)
    scheduler = ddim_scheduler(config.train_timesteps, args.steps)

    @torch.no_grad()
    def with_diffusers() -> torch.Tensor:
        cond = policy.obs_normalizer(obs)
        x = noise.flatten(1)
        for t in scheduler.timesteps:
            eps = policy.denoiser(x, cond, t.reshape(1))
            x = scheduler.step(eps, int(t), x, eta=0.0).prev_sample
        return policy.unnormalize_actions(x.view(args.batch, *policy.noise_shape)).clamp(-1, 1)

    gap = (with_diffusers() - policy.sample(obs, noise)).abs().max().item()
    diffusers_ms = median_ms(with_diffusers, args.calls)
    ours_ms = median_ms(lambda: policy.sample(obs, noise), args.calls)

    from robotrl.runtime.policy_runner import create_session

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sampler.onnx"
        torch.onnx.export(policy, (obs, noise), str(path), dynamo=False, opset_version=17,
                          input_names=["obs", "noise"], output_names=["chunk"])  # fmt: skip
        session = create_session(path)
        feed = {"obs": obs.numpy(), "noise": noise.numpy()}
        onnx_ms = median_ms(lambda: session.run(None, feed), args.calls)

    print(f"one chunk ({args.steps} DDIM steps, batch {args.batch}, one thread), max |diff| {gap:.1e}:")
    print(f"  diffusers DDIMScheduler loop  {diffusers_ms:7.3f} ms  (1.00x)")
    print(f"  ours (torch)                  {ours_ms:7.3f} ms  ({diffusers_ms / ours_ms:.2f}x faster)")
    print(f"  ours exported, onnxruntime    {onnx_ms:7.3f} ms  ({diffusers_ms / onnx_ms:.2f}x faster)")


if __name__ == "__main__":
    main()
