"""Video in and out, entirely in memory.

The package's parts: :mod:`.limits` (:class:`VideoLimits`, :class:`VideoInfo`), :mod:`.container`
(opening an input, pre-walk first, and error translation), :mod:`.orientation` (display matrix),
:mod:`.probe` (:func:`probe_video`), :mod:`.decode` (:func:`iter_frames`), :mod:`.transcode`
(:func:`transform_video` on BGR frames, :func:`transform_video_planes` on the decoder's I420
planes, :mod:`.planes`) and :mod:`.mp4box` (``moov`` relocation); sniffing is
:mod:`pipelines.media.sniff`, shared with images.

Inputs are bytes. The container is sniffed from its magic (never from a file name): ISO-BMFF
(``ftyp``: MP4, MOV/QuickTime) and EBML (``1A45DFA3``: WebM, Matroska). The sniffed container
selects the FFmpeg demuxer explicitly, so FFmpeg never probes the bytes itself (no playlist,
``concat`` or image-sequence demuxer can be reached through a crafted upload). Video codecs are
allow-listed (:data:`VIDEO_CODECS`) to keep the decoder attack surface to what phones and browsers
write.

Limits (:class:`VideoLimits`) are checked before a frame is decoded: the byte size first, then,
for MP4/MOV, a pure-Python walk of the box tree (:mod:`pipelines.media.isobmff`) that refuses
sample, chunk and edit-list counts FFmpeg would allocate from before any limit could look at them
(every ``av.open`` of an input is preceded by it; WebM/Matroska are not pre-walked and are
bounded by the process's memory ceiling only), then the header values (resolution, duration,
frame count), then a demux-only pass over the video and audio packets (no decoding) that counts
frames and measures the duration even when the header has no index (browser WebM has none) and
notices truncated files (a packet cut short by the end of the data, or fewer packets than the
index lists). Only then is the first frame decoded, to
read the display rotation (PyAV exposes the stream's display matrix only on decoded frames).

Decoded frames are 8-bit BGR (``HxWx3`` ``uint8``; 8-bit 4:2:0 in BT.601 limited range is
converted by OpenCV, everything else by swscale), or I420 planes (:class:`Planes`), rotated
upright according to the display matrix (all eight orientations, the same choices as FFmpeg's
``autorotate``; a non-right-angle rotation is snapped to the nearest quarter turn).

Output is H.264 (libx264), yuv420p: from :func:`transform_video` in the BT.601 matrix, limited
range (OpenCV's BGR->I420), tagged as such; from :func:`transform_video_planes` in the input's
own matrix and range (its decoded planes, edited in place), tagged as the input; the input's
colour primaries and transfer tags are kept either way. The MP4's ``moov`` box comes before
``mdat`` (streamable). FFmpeg's ``+faststart`` cannot be used: it reopens
the output by file name for its second pass, which fails for in-memory output. Fragmented MP4
(``frag_keyframe+empty_moov``) puts ``moov`` first but was measured to shift the video by the
B-frame delay (two frames at 24 fps) and to open a gap in copied AAC audio, because fragments
carry no edit list. So the output is written as a classic MP4 into a buffer and its ``moov`` is
moved in front of ``mdat`` here (:func:`.mp4box._faststart`), rewriting the ``stco``/``co64`` chunk
offsets; the result is laid out as ``+faststart`` lays it out (FFmpeg's ``free`` placeholder
dropped).

Threads: a transcode runs on three threads joined by bounded queues: one demuxes and decodes
(and converts each frame to what the callback takes: BGR, or a fresh copy of the planes), the
calling thread runs the callback in frame order, and one converts and encodes (libx264, with its
own threads) and muxes. FFmpeg and OpenCV release the GIL, so a slow callback frame (a face
detection) overlaps the encoding of the frames before it. The first error of any of them stops
the other two and is raised to the caller, as from a single thread.

Timing: every output frame keeps the pts of its input frame, in the input stream's time base, so
the frame count, the timestamps (variable frame rate included) and the duration equal the input's.
Audio (the first audio stream) is copied when it is already AAC and re-encoded to AAC otherwise,
or dropped with ``keep_audio=False``. Nothing of the input's container or stream metadata is
copied: no creation time, location, device make or model, no rotation (frames are upright).

Odd sizes: yuv420p needs even width and height, and H.264 can only crop in whole chroma samples
(two pixels), so an odd size cannot be kept exactly. The processed frame is *padded* by one
replicated row and/or column at the bottom/right (321x241 becomes 322x242): no pixel of the
processed picture is lost, and the padding copies pixels the callback already processed.

Nothing here writes a file.
"""

from pipelines.media.sniff import ContainerKind, sniff_video_container
from pipelines.media.video.decode import iter_frames
from pipelines.media.video.limits import VIDEO_CODECS, VideoInfo, VideoLimits
from pipelines.media.video.planes import Planes, YuvMatrix
from pipelines.media.video.probe import probe_video
from pipelines.media.video.transcode import (
    X264_PRESETS,
    FrameFn,
    PlaneFn,
    transform_video,
    transform_video_planes,
)

__all__ = [
    "VIDEO_CODECS",
    "X264_PRESETS",
    "ContainerKind",
    "FrameFn",
    "PlaneFn",
    "Planes",
    "VideoInfo",
    "VideoLimits",
    "YuvMatrix",
    "iter_frames",
    "probe_video",
    "sniff_video_container",
    "transform_video",
    "transform_video_planes",
]
