"""Adapter files: the directory format (`store`: writing atomically, reading verified, the
store of many), the metadata checks (`meta`), atomic file-system steps (`fsutil`), and export
merged into the base (`merge`). Nothing here imports the engine, the server or training."""
