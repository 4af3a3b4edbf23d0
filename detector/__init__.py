"""Pure spike detection and forecasting: numbers in, verdicts out; no I/O."""
from surgewatch.detector.spike import DetectorParams, SpikeDetector
from surgewatch.detector.verdict import Forecast, Severity, Verdict

__all__ = ["DetectorParams", "SpikeDetector", "Forecast", "Severity", "Verdict"]
