import torch


def tiny_inputs(cfg, batch=2, height=None, width=None):
    """A random clip in [-1, 1] and audio in SoundNet's [-256, 256] scale for ``cfg``'s window."""
    clip = torch.rand(batch, 3, cfg.frames, height or cfg.height, width or cfg.width) * 2 - 1
    audio = (torch.rand(batch, 1, cfg.audio_samples) * 2 - 1) * 256
    return clip, audio
