"""Reproducible checkpoints: two identical trainings give byte-identical weights files, so the
sha256 of best.pt is a true content version; and the resumable copy of last.pt kept after each epoch."""

import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any


def _normalize_train_args(args: dict[str, Any]) -> dict[str, Any]:
    # Where it ran and what it drew, not what it is.
    local = {"project": None, "name": None, "save_dir": None, "plots": None}
    return {
        k: local[k] if k in local else (Path(v).name if k in {"data", "model"} and isinstance(v, str) else v)
        for k, v in args.items()
    }


def _zero_serialization_id(path: Path) -> None:
    """torch.save writes a random `.data/serialization_id` (metadata only); overwrite it with zeros in place."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        entry = next((i for i in archive.infolist() if i.filename.endswith(".data/serialization_id")), None)
        central_dir = archive.start_dir
    if entry is None or entry.compress_type != zipfile.ZIP_STORED:
        return
    replacement = b"0" * entry.file_size
    name_length, extra_length = struct.unpack_from("<HH", data, entry.header_offset + 26)
    start = entry.header_offset + 30 + name_length + extra_length
    data[start : start + entry.file_size] = replacement
    crc = zlib.crc32(replacement)
    struct.pack_into("<I", data, entry.header_offset + 14, crc)
    offset = central_dir
    while data[offset : offset + 4] == b"PK\x01\x02":
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_len].decode() == entry.filename:
            struct.pack_into("<I", data, offset + 16, crc)
            break
        offset += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))


def canonicalize_checkpoint(path: Path) -> None:
    """Drop what differs between two identical trainings (timestamps, git info, paths, wall times,
    torch's random serialization id), so that the sha256 of the file is a true content version."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["date"] = None
    checkpoint["git"] = None
    results = checkpoint.get("train_results")
    if isinstance(results, dict):
        checkpoint["train_results"] = {k: v for k, v in results.items() if k != "time"}
    if isinstance(checkpoint.get("train_args"), dict):
        checkpoint["train_args"] = _normalize_train_args(checkpoint["train_args"])
    for key in ("model", "ema"):
        module = checkpoint.get(key)
        if module is not None and isinstance(getattr(module, "args", None), dict):
            module.args = _normalize_train_args(module.args)
    torch.save(checkpoint, path)
    _zero_serialization_id(path)


def checkpoint_epoch(checkpoint: Path) -> int:
    """Epochs completed in a saved checkpoint (ultralytics stores the 0-based epoch index)."""
    import torch

    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]) + 1


def checkpoint_class_names(weights: Path) -> list[str]:
    """The class names a weights file predicts, in class-id order."""
    import torch

    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    model = checkpoint["ema"] if checkpoint.get("ema") is not None else checkpoint["model"]
    names = model.names
    return [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)


def keep_checkpoint(last: Path, checkpoint: Path) -> None:
    """Copy ultralytics' last.pt to `checkpoint` atomically (a reader never sees half a file)."""
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    shutil.copyfile(last, partial)
    os.replace(partial, checkpoint)
