"""``avrsp serve``: a local web page to look at saliency, frame by frame (:mod:`.app`:
the application and its limits; :mod:`.jobs`: the job queue; :mod:`.outputs`: what a
job writes and the page fetches). docs/serve.md."""

from .app import MAX_ARRIVING, MAX_NAME_BYTES, attachment, clean_name, create_app, serve
from .jobs import KEEP_ENDED, KEEP_RESULTS, MAX_WAITING, Job, Jobs, QueueFull
from .outputs import dataset_job, stored_size, video_job

__all__ = ["KEEP_ENDED", "KEEP_RESULTS", "MAX_ARRIVING", "MAX_NAME_BYTES", "MAX_WAITING", "Job", "Jobs", "QueueFull",
           "attachment", "clean_name", "create_app", "dataset_job", "serve", "stored_size", "video_job"]
