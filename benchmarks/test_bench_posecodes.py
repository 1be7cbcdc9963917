"""Pose-code extraction throughput on one thread (target >= 10,000 frames/s)."""
import numpy as np
import torch

from rvqfast.data.synthetic import generate_motion
from rvqfast.motion.posecodes import extract_posecodes

FRAMES = 4096


def test_bench_extract_posecodes(benchmark):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clips = [generate_motion(0, i).joints for i in range(60)]
        joints = np.concatenate(clips)[:FRAMES].astype(np.float32)
        assert joints.shape[0] == FRAMES
        codes = benchmark(extract_posecodes, joints)
        assert codes.shape == (FRAMES, 392)
        fps = FRAMES / benchmark.stats.stats.mean
        benchmark.extra_info["frames_per_second"] = fps
        assert fps >= 10_000, f"{fps:.0f} frames/s"
    finally:
        torch.set_num_threads(threads)
