"""Evidence of each action: a snapshot, a clip and a row in the event store (docs/contracts.md, "Evidence").

- :mod:`.store`: the SQLite event store and the files beside it, with retention (one writer thread).
- :mod:`.snapshots`: JPEG encoding of a decoded frame, a person's box drawn on it.
- :mod:`.recorder`: a camera's ring of compressed packets and the clips remuxed from it; the evidence stream.
- :mod:`.keeper`: turns a camera's events into evidence and tells the events where it is.
"""
