"""``kaldi``: ``feats-00000.ark`` segments and one ``feats.scp`` index, written with kaldiio.

Flow: source -> load -> stack -> execute -> **sink** -> engines. A ``ShardedWriter``: each
segment is a binary Kaldi archive of float32 matrices ``(frames, channels)`` (Kaldi has no
float16 matrix: ``output.dtype=float16`` is refused for this format when the plan is built),
written atomically; after it is committed ``feats.scp`` (``<utterance id> <ark>:<byte offset>``,
one line per input, ids from ``base.item_id``: unique, stable, no spaces) is rewritten whole,
atomically, with the earlier lines, a redone input's line replaced. So a killed job leaves an ark
and scp pair of what finished, readable by ``kaldiio.load_scp("feats.scp")`` (and Kaldi tools),
and a resumed job continues with the next segment. In a local ``output.dir`` the scp names each
ark by its absolute path; on a URL by its name relative to ``output.dir`` (read it from there).
The manifest records each input's ark (``output``), id (``item``) and byte offset (``offset``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from conv_pipeline.sink.formats.base import Entry, Location, ShardedWriter, item_id
from conv_pipeline.sink.writer import atomic_write

SCP_NAME = "feats.scp"


class KaldiWriter(ShardedWriter):
    prefix = "feats"
    suffix = "ark"
    index_name = SCP_NAME

    def write_segment(self, path: Any, name: str, entries: list[Entry]) -> list[tuple[str, int]]:
        import kaldiio

        buf = io.BytesIO()
        places = []
        for entry in entries:
            ident = item_id(entry)
            start = buf.tell()
            kaldiio.save_ark(buf, {ident: self.stored(entry)})
            places.append((ident, start + len(ident.encode("ascii")) + 1))  # the matrix follows "<id> "
        atomic_write(Path(path), lambda tmp: tmp.write_bytes(buf.getvalue()))
        return places

    def parse_index(self, data: bytes) -> dict[str, Any]:
        lines = (line.split(None, 1) for line in data.decode("utf-8", "replace").splitlines())
        return {parts[0]: parts[1] for parts in lines if len(parts) == 2}

    def index_entry(self, entry: Entry, place: Location) -> Any:
        return f"{self.storage_path(place.output)}:{place.offset}"

    def index_bytes(self, index: dict[str, Any]) -> bytes:
        return "".join(f"{ident} {where}\n" for ident, where in sorted(index.items())).encode("utf-8")
