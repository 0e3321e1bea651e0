"""Media through PyAV: :mod:`.read` decodes videos and sound (what the model sees),
:mod:`.write` writes maps, overlays and videos (what ``predict``, ``serve`` and
``synth`` leave behind). Every public name of both is importable from here.

Every failure is a :class:`MediaError` whose message is one line naming the file and the
cause; recoverable oddities (no audio track) are a :class:`MediaWarning`.
"""

from .read import (SOUNDNET_RATE, SOUNDNET_SCALE, MediaError, MediaWarning, VideoInfo, clip_audio, frame_span,
                   iter_frames, no_audio_track, probe, read_audio, resize_map, resize_rgb)
from .write import (AAC_RATES, MP4_AUDIO, NpzWriter, OverlayWriter, colormap, encoder_threads, overlay,
                    save_thumbnail, thumbnail_size, write_map_png, write_mp4)

__all__ = ["SOUNDNET_RATE", "SOUNDNET_SCALE", "MediaError", "MediaWarning", "VideoInfo", "clip_audio", "frame_span",
           "iter_frames", "no_audio_track", "probe", "read_audio", "resize_map", "resize_rgb",
           "AAC_RATES", "MP4_AUDIO", "NpzWriter", "OverlayWriter", "colormap", "encoder_threads", "overlay",
           "save_thumbnail", "thumbnail_size", "write_map_png", "write_mp4"]
