"""Data on disk: session files, the pvc-8 importer, response extraction, the dataset."""
