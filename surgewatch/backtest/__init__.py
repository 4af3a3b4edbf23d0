"""Replaying labelled series through the detector (:mod:`.replay`) and scoring them the way the
Numenta Anomaly Benchmark does (:mod:`.nab`)."""
