"""The caption history: what the cameras saw, stored as segments in SQLite, searchable and summarised.

store.py (database, retention), segments.py (what counts as the same thing), writer.py (the one writer,
fed like a publisher), thumbnails.py (a JPEG per segment start and alarm), query.py (search, summary).
"""
