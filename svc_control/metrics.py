"""The control service's Prometheus metrics (served by meshkit's exporter when enabled)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from svc_control.controller import BuildingController

MODEL_PREDICTION_ERROR = Gauge(
    "hvac_control_model_prediction_error_kelvin",
    "RMSE of the identified zone model's recent 1-hour-ahead predictions",
    ["building", "zone"],
)
INTERVALS = Counter(
    "hvac_control_intervals_total",
    "Control intervals decided, by outcome (optimized or fallback)",
    ["building", "outcome"],
)


def record_interval(building_id: str, controller: BuildingController, fallback: bool) -> None:
    """Count one decided interval and publish each zone's current model error."""
    INTERVALS.labels(building_id, "fallback" if fallback else "optimized").inc()
    for zone_id, identifier in controller.identifiers.items():
        error_k = identifier.prediction_rmse_k()
        if error_k is not None:
            MODEL_PREDICTION_ERROR.labels(building_id, zone_id).set(error_k)
