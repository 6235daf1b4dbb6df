"""Hinted handoff: writes a replica missed, kept by the coordinator and replayed to it.

``log`` frames hint records (pure), ``store`` keeps one bounded log per
peer, in memory or under ``hints_dir``, and ``replay`` is the Trio shell
that stores misses and replays them in order once the peer is back.
"""
