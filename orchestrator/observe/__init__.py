"""Watching a sweep from its sweep dir: status, the report and its plots, TensorBoard, the task verdict. Nothing here starts Ray."""
