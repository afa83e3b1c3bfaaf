"""What the numbers were measured on: CPU, threads, OS and package versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata

PACKAGES = ("edgedistill", "torch", "transformers", "optimum-onnx", "onnxruntime", "llama_cpp_python", "gguf", "numpy")


def peak_memory_bytes(device: str = "cpu") -> int:
    """This process's peak: CUDA's max allocated bytes, else the kernel's VmHWM (0 off Linux)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated()
    try:
        with open("/proc/self/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }
