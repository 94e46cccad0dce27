"""`bigtrain bench generate EXPORT`: CPU images/s of an export, PyTorch vs TorchScript vs ONNX Runtime."""
from __future__ import annotations

import os
import time

import torch


def bench_generate(folder: str, batch: int = 64, rounds: int = 5, threads: int | None = None) -> dict:
    """Images/s of one exported generator run three ways on the CPU, side by side: PyTorch
    (bigtrain.load_generator), TorchScript and ONNX Runtime (whichever the export holds), the same
    inputs, in interleaved rounds so machine noise hits all alike; the median round counts."""
    import statistics

    from bigtrain.export import load_generator
    from bigtrain.export.graph import Sampler, example_inputs, onnx_session
    from bigtrain.export.run import FILES

    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    G, config = load_generator(folder)
    sampler = Sampler(G).eval()
    args = example_inputs(sampler, batch, None, seed=0)
    runners = {"pytorch": lambda: sampler(*args)}
    files = config.get("files", {})  # which graphs the export holds; their names are fixed
    if "torchscript" in files:
        ts = torch.jit.load(os.path.join(folder, FILES["torchscript"]))
        runners["torchscript"] = lambda: ts(*args)
    if "onnx" in files:
        sess = onnx_session(os.path.join(folder, FILES["onnx"]), threads)
        feeds = {n: a.numpy() for n, a in zip(sampler.input_names(), args)}
        runners["onnxruntime"] = lambda: sess.run(["img"], feeds)
    times: dict[str, list[float]] = {k: [] for k in runners}
    with torch.no_grad():
        for fn in runners.values():  # warm-up: allocation, graph optimisation (TorchScript's profiling
            for _ in range(3):       # executor specialises on the second call)
                fn()
        for _ in range(rounds):
            for k, fn in runners.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"export": folder, "family": config["family"], "resolution": config["resolution"], "batch": batch,
            "threads": threads, "rounds": rounds,
            "img_per_sec": {k: batch / v for k, v in med.items()},
            "vs_pytorch": {k: med["pytorch"] / v for k, v in med.items()}}


def format_generate_table(r: dict) -> str:
    lines = [f"{r['family']} {r['resolution']}x{r['resolution']}, batch {r['batch']}, {r['threads']} thread(s), "
             f"median of {r['rounds']} interleaved rounds",
             f"{'runtime':<14}{'img/s':>10}{'vs pytorch':>12}"]
    for k, v in r["img_per_sec"].items():
        lines.append(f"{k:<14}{v:>10.1f}{r['vs_pytorch'][k]:>11.2f}x")
    return "\n".join(lines)
