"""Training samples: clips of T frames with their sound, map and fixations, drawn as the
paper draws them and cut as the test protocol cuts its windows (docs/data.md)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..media import SOUNDNET_RATE, resize_map
from .datasets import AnnotatedVideo, DataError, resize_frame


def resize_fixations(fix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Move each fixation to the pixel that contains it at the new size (none is lost;
    two may merge)."""
    out = np.zeros(size, np.float32)
    ys, xs = np.nonzero(fix)
    if len(ys):
        out[(ys * size[0]) // fix.shape[0], (xs * size[1]) // fix.shape[1]] = 1.0
    return out


def to_model_frames(frames: Sequence[np.ndarray], size: tuple[int, int]) -> torch.Tensor:
    """RGB uint8 frames → 3×T×H×W float32 in [-1, 1] (the S3D Kinetics convention)."""
    arr = np.stack([resize_frame(f, size) for f in frames])
    return torch.from_numpy(arr).permute(3, 0, 1, 2).float().div_(127.5).sub_(1.0)


class ClipDataset(torch.utils.data.Dataset):
    """Training samples: T consecutive frames ending at a valid target frame.

    Item ``i`` draws from video ``i % len(videos)`` (``clips_per_video`` items per video
    per epoch). As in the paper, the clip is T consecutive real frames: its last frame,
    the target, is drawn uniformly among frames T−1 … n−1 whose map is valid. The clip and
    its sound are the test protocol's window for that frame (``avrsp.windows``), so
    training never sees a clip or a sound cut the protocol does not make. Only two cases
    differ from a plain forward clip, exactly as at test time: a video shorter than T
    frames (its clips repeat frame 0 before the video's start), and a video whose only
    valid maps lie in its first T−1 frames (the time-reversed window starting at the
    target, sound reversed too). The paper samples clips at random; these come from a
    generator seeded by (seed, epoch, i), so any worker or rank reproduces them. Items
    are dicts: ``clip`` 3×T×H×W in [-1, 1], ``audio`` 1×L (SoundNet scale; silence when
    the video has none), ``map`` H×W in [0, 1], ``fixations`` H×W in {0, 1}, and
    ``video`` / ``frame`` (0-based) / ``dataset``.
    """

    def __init__(self, videos: Sequence[AnnotatedVideo], frames: int, size: tuple[int, int], *,
                 audio: bool = True, sample_rate: int = SOUNDNET_RATE, clips_per_video: int = 1, seed: int = 0,
                 max_tries: int = 20):
        self.videos = [v for v in videos if len(v) > 0]
        if not self.videos:
            raise DataError("no usable videos")
        self.frames, self.size, self.use_audio = frames, tuple(size), audio
        self.sample_rate, self.clips_per_video, self.seed = sample_rate, clips_per_video, seed
        self.max_tries = max_tries
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.videos) * self.clips_per_video

    def _target(self, video: AnnotatedVideo, rng: np.random.Generator) -> int:
        n = len(video)
        first = self.frames - 1 if n >= self.frames else 0  # a whole real clip ends here at the earliest
        for _ in range(self.max_tries):
            k = int(rng.integers(first, n))
            if video.is_target(k):
                return k
        # Few valid frames: scan once so a video with any valid map still yields one.
        valid = [k for k in range(first, n) if video.is_target(k)] or [k for k in range(n) if video.is_target(k)]
        if not valid:
            raise DataError(f"{video.dataset}/{video.name}: no frame has a usable saliency map")
        return int(rng.choice(valid))

    def __getitem__(self, i: int) -> dict:
        return self.item(i, self.epoch)

    def item(self, i: int, epoch: int) -> dict:
        """Item ``i`` of ``epoch`` (``dataset[i]`` is item ``i`` of the epoch last set)."""
        from ..windows import window

        video = self.videos[i % len(self.videos)]
        rng = np.random.default_rng([self.seed, epoch, i])
        k = self._target(video, rng)
        n = len(video)
        w = window(k, self.frames, lambda j: j < n)
        clip = to_model_frames(video.frames.read(list(w.indices)), self.size)
        sal = video.saliency_map(k)
        fix = video.fixations(k)
        item = {
            "clip": clip,
            "map": torch.from_numpy(resize_map(sal, self.size)),
            "fixations": torch.from_numpy(resize_fixations(fix, self.size) if fix is not None
                                          else np.zeros(self.size, np.float32)),
            "video": video.name, "frame": k, "dataset": video.dataset,
        }
        if self.use_audio:
            item["audio"] = torch.from_numpy(w.audio(video.audio, video.fps, self.frames, self.sample_rate))[None]
        return item


__all__ = ["ClipDataset", "resize_fixations", "to_model_frames"]
