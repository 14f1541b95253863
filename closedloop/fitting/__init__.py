"""Offline batch fitting of archived sessions: one session, many in parallel, and the search.

`session.fit_session` fits one recording end to end, `batch.fit_archives` runs many in
worker processes, and `search.random_search` tunes the architecture on one session.
"""
