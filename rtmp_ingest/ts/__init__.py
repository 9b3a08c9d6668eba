"""MPEG-TS ingest: a sans-IO demuxer (`packets`), elementary stream syntax (`es`) and
the conversion of a TS feed into the bundle's frames (`frames.TsMedia`)."""

from rtmp_ingest.ts.frames import TsMedia
from rtmp_ingest.ts.packets import NEED_DATA, Lost, Pes, Program, TsDemuxer, TsError

__all__ = ["NEED_DATA", "Lost", "Pes", "Program", "TsDemuxer", "TsError", "TsMedia"]
