"""The safety envelope: properties over arbitrary plans, states and overrides, then examples."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import pytest
from hvac.control.v1 import resources_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from svc_control.envelope import (
    HOUR_S,
    EnvelopeResult,
    EquipmentState,
    Override,
    OverrideKind,
    Proposal,
    Source,
    ZoneCommand,
    ZoneInput,
    apply_envelope,
    safe_setpoints,
)
from svc_control.plant import DEAD_BAND_K, Band, EquipmentKind, EquipmentLimits, ZonePlant

NOW_S = 1_000_000.0
ZONE_IDS = ("a", "b", "c")
any_float = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def plants(draw: st.DrawFn, zone_id: str) -> ZonePlant:
    steps = draw(st.lists(st.floats(0.1, 50.0), min_size=1, max_size=7))
    stages = [0.0]
    for step in steps:
        stages.append(stages[-1] + step)
    lower = draw(st.floats(-30.0, 40.0))
    safe = Band(lower, lower + draw(st.floats(DEAD_BAND_K, 30.0)))
    limits = EquipmentLimits(
        kind=draw(st.sampled_from(EquipmentKind)),
        stages_kw=tuple(stages),
        min_on_s=draw(st.sampled_from([0.0, 180.0, 600.0, 3600.0])),
        min_off_s=draw(st.sampled_from([0.0, 300.0, 900.0, 3600.0])),
        max_cycles_per_hour=draw(st.integers(1, 60)),
        max_ramp_kw_per_min=draw(st.none() | st.floats(0.01, 100.0)),
    )
    return ZonePlant(zone_id, 100.0, safe, safe, safe, limits)


times = st.floats(NOW_S - 2 * HOUR_S, NOW_S)
states = st.builds(
    EquipmentState,
    stage=st.integers(-2, 10),
    heating_setpoint_c=st.none() | any_float,
    cooling_setpoint_c=st.none() | any_float,
    last_command_s=st.none() | times,
    last_switch_s=st.none() | times,
    start_times_s=st.lists(times, max_size=70).map(tuple),
)
proposals = st.builds(
    Proposal, st.integers(-100, 100), any_float, any_float, st.sampled_from(Source)
)


@st.composite
def overrides(draw: st.DrawFn) -> Override:
    kind = draw(st.sampled_from(OverrideKind))
    create_s = draw(st.floats(NOW_S - 2 * HOUR_S, NOW_S + 600.0))
    heating = cooling = None
    if kind is OverrideKind.SETPOINT:
        heating = draw(st.floats(-30.0, 45.0))
        cooling = heating + draw(st.floats(DEAD_BAND_K, 20.0))
    return Override(
        override_id=f"o{draw(st.integers(0, 10**6))}",
        kind=kind,
        create_s=create_s,
        expire_s=create_s + draw(st.floats(1.0, 2 * HOUR_S)),
        zone_id=draw(st.sampled_from([None, *ZONE_IDS, "elsewhere"])),
        heating_setpoint_c=heating,
        cooling_setpoint_c=cooling,
        held_stage=draw(st.none() | st.integers(-3, 10)),
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[list[ZoneInput], list[Override], float | None]:
    count = draw(st.integers(1, len(ZONE_IDS)))
    zones = [
        ZoneInput(
            plant=draw(plants(ZONE_IDS[i])),
            state=draw(states),
            temperature_c=draw(st.none() | any_float),
            proposal=draw(proposals),
        )
        for i in range(count)
    ]
    top_kw = sum(z.plant.equipment.stages_kw[-1] for z in zones)
    cap = draw(st.none() | st.floats(0.0, top_kw))
    return zones, draw(st.lists(overrides(), max_size=4)), cap


def equipment_limits_kept(zone: ZoneInput, command: ZoneCommand, now_s: float) -> bool:
    """The equipment rules, written out from the contract (not from the implementation)."""
    limits, state = zone.plant.equipment, zone.state
    current = min(max(state.stage, 0), len(limits.stages_kw) - 1)
    if command.stage == current:
        return True
    ramp = limits.max_ramp_kw_per_min
    if ramp is not None and state.last_command_s is not None:
        allowed_kw = ramp * max(0.0, now_s - state.last_command_s) / 60.0
        if abs(command.power_kw - limits.stages_kw[current]) > allowed_kw + 1e-9:
            return False
    since_s = math.inf if state.last_switch_s is None else now_s - state.last_switch_s
    if current > 0 and command.stage == 0 and since_s < limits.min_on_s:
        return False
    if current == 0 and command.stage > 0:
        starts = [t for t in state.start_times_s if now_s - HOUR_S < t <= now_s]
        if since_s < limits.min_off_s or len(starts) >= limits.max_cycles_per_hour:
            return False
    return True


def check_invariants(
    zones: list[ZoneInput],
    result: EnvelopeResult,
    overrides_: list[Override],
    cap_kw: float | None,
    now_s: float,
) -> None:
    assert [c.zone_id for c in result.commands] == [z.plant.zone_id for z in zones]
    for zone, command in zip(zones, result.commands, strict=True):
        safe, stages_kw = zone.plant.safe_band, zone.plant.equipment.stages_kw
        assert safe.lower_c <= command.heating_setpoint_c <= safe.upper_c
        assert safe.lower_c <= command.cooling_setpoint_c <= safe.upper_c
        assert command.cooling_setpoint_c - command.heating_setpoint_c >= DEAD_BAND_K - 1e-9
        assert 0 <= command.stage < len(stages_kw)
        assert command.power_kw == stages_kw[command.stage]
        if not command.cap_forced:
            assert equipment_limits_kept(zone, command, now_s)
        active = [o for o in overrides_ if o.create_s <= now_s < o.expire_s]
        covering = [o for o in active if o.zone_id in (None, zone.plant.zone_id)]
        if command.override_id is not None:
            assert command.override_id in {o.override_id for o in covering}
        if any(o.kind is OverrideKind.EMERGENCY for o in covering):
            assert command.source is Source.EMERGENCY
            assert (command.heating_setpoint_c, command.cooling_setpoint_c) == (
                safe.lower_c,
                safe.upper_c,
            )
        elif covering:
            assert command.source is Source.OVERRIDE
        else:
            assert command.source in (Source.PLAN, Source.FALLBACK_THERMOSTAT)
    total_kw = sum(c.power_kw for c in result.commands)
    if cap_kw is not None:
        assert total_kw <= cap_kw + 1e-9
    if any(c.cap_forced for c in result.commands):
        # Forcing is allowed only when every zone at its lowest legal stage still breaks the cap.
        assert cap_kw is not None
        lowest_legal_kw = 0.0
        for zone in zones:
            stages_kw = zone.plant.equipment.stages_kw
            legal = [
                stages_kw[s]
                for s in range(len(stages_kw))
                if equipment_limits_kept(
                    zone, ZoneCommand("", s, stages_kw[s], 0, 0, Source.PLAN, None, False), now_s
                )
            ]
            lowest_legal_kw += min(legal)
        assert lowest_legal_kw > cap_kw


@settings(max_examples=400, deadline=None)
@given(situations())
def test_no_command_leaves_the_envelope_whatever_the_plan_state_and_overrides(
    situation: tuple[list[ZoneInput], list[Override], float | None],
) -> None:
    zones, overrides_, cap_kw = situation
    result = apply_envelope(zones, overrides_, NOW_S, cap_kw)
    check_invariants(zones, result, overrides_, cap_kw, NOW_S)


@dataclass
class Trace:
    times_s: list[float]
    stages: list[int]
    forced: list[bool]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(plants("a"), min_size=2, max_size=2),
    st.lists(
        st.tuples(st.floats(30.0, 1800.0), proposals, proposals, st.none() | any_float),
        min_size=5,
        max_size=40,
    ),
    st.lists(overrides(), max_size=3),
    st.none() | st.floats(0.0, 200.0),
)
def test_equipment_limits_hold_over_a_whole_run_of_arbitrary_plans(
    zone_plants: list[ZonePlant],
    intervals: list[tuple[float, Proposal, Proposal, float | None]],
    overrides_: list[Override],
    cap_kw: float | None,
) -> None:
    plants_ = [zone_plants[0], replace(zone_plants[1], zone_id="b")]
    states_ = [EquipmentState(), EquipmentState()]
    traces = [Trace([], [], []), Trace([], [], [])]
    now_s = NOW_S
    for gap_s, first, second, temperature in intervals:
        now_s += gap_s
        zones = [
            ZoneInput(plants_[i], states_[i], temperature, p) for i, p in enumerate((first, second))
        ]
        result = apply_envelope(zones, overrides_, now_s, cap_kw)
        check_invariants(zones, result, overrides_, cap_kw, now_s)
        states_ = list(result.states)
        for trace, command in zip(traces, result.commands, strict=True):
            trace.times_s.append(now_s)
            trace.stages.append(command.stage)
            trace.forced.append(command.cap_forced)
    for plant, trace in zip(plants_, traces, strict=True):
        limits = plant.equipment
        starts = [
            t
            for k, t in enumerate(trace.times_s)
            if trace.stages[k] > 0 and (k == 0 or trace.stages[k - 1] == 0)
        ]
        for t in starts:
            in_window = [s for s in starts if t - HOUR_S < s <= t]
            assert len(in_window) <= limits.max_cycles_per_hour
        switches = [
            k
            for k in range(1, len(trace.stages))
            if (trace.stages[k] > 0) != (trace.stages[k - 1] > 0)
        ]
        for previous, k in itertools.pairwise(switches):
            held_s = trace.times_s[k] - trace.times_s[previous]
            if trace.stages[k] == 0 and not trace.forced[k]:
                assert held_s >= limits.min_on_s
            if trace.stages[k] > 0:
                assert held_s >= limits.min_off_s


# ---------------------------------------------------------------------------- examples


def heat_pump_zone(zone_id: str = "a", ramp: float | None = None) -> ZonePlant:
    limits = EquipmentLimits(EquipmentKind.HEATING, (0.0, 1.0, 2.0, 3.0), max_ramp_kw_per_min=ramp)
    return ZonePlant(zone_id, 100.0, Band(21, 24), Band(15, 30), Band(10, 32), limits)


def test_setpoints_outside_the_safe_band_are_pulled_inside_with_the_dead_band() -> None:
    assert safe_setpoints(Band(10, 32), -40.0, 99.0) == (10.0, 32.0)
    assert safe_setpoints(Band(10, 32), 31.0, 31.5) == (29.2, 32.0)
    assert safe_setpoints(Band(10, 32), math.nan, math.inf) == (10.0, 32.0)


def test_an_expired_override_no_longer_wins_over_the_plan() -> None:
    zone = ZoneInput(heat_pump_zone(), EquipmentState(), 20.0, Proposal(2, 21.0, 24.0))
    hold = Override("h", OverrideKind.HOLD, NOW_S - 600, NOW_S, zone_id="a")
    result = apply_envelope([zone], [hold], NOW_S, None)
    assert result.commands[0].source is Source.PLAN
    assert result.commands[0].stage == 2
    during = apply_envelope([zone], [hold], NOW_S - 1, None)
    assert during.commands[0].source is Source.OVERRIDE and during.commands[0].stage == 0


def test_emergency_wins_and_sends_the_safe_band_everywhere() -> None:
    zones = [
        ZoneInput(heat_pump_zone(z), EquipmentState(), 20.0, Proposal(3, 22.0, 25.0))
        for z in ("a", "b")
    ]
    overrides_ = [
        Override("s", OverrideKind.SETPOINT, NOW_S - 10, NOW_S + 600, "a", 18.0, 26.0),
        Override("e", OverrideKind.EMERGENCY, NOW_S - 60, NOW_S + 600),
    ]
    result = apply_envelope(zones, overrides_, NOW_S, None)
    for command in result.commands:
        assert command.source is Source.EMERGENCY and command.override_id == "e"
        assert (command.heating_setpoint_c, command.cooling_setpoint_c) == (10.0, 32.0)
        assert command.stage == 0  # 20 °C is safe: the least energy


def test_the_peak_cap_lowers_plan_zones_before_override_zones() -> None:
    zones = [
        ZoneInput(heat_pump_zone(z), EquipmentState(), 15.0, Proposal(3, 21.0, 24.0))
        for z in ("a", "b")
    ]
    setpoint = Override("s", OverrideKind.SETPOINT, NOW_S - 10, NOW_S + 600, "b", 25.0, 28.0)
    result = apply_envelope(zones, [setpoint], NOW_S, peak_power_cap_kw=4.0)
    assert [c.stage for c in result.commands] == [1, 3]
    assert result.commands[0].adjusted and not result.commands[0].cap_forced


def test_minimum_on_time_keeps_a_zone_running_unless_the_cap_forces_it_off() -> None:
    running = EquipmentState(stage=2, last_command_s=NOW_S - 60, last_switch_s=NOW_S - 60)
    zone = ZoneInput(heat_pump_zone(), running, 22.0, Proposal(0, 21.0, 24.0))
    kept = apply_envelope([zone], [], NOW_S, None).commands[0]
    assert kept.stage == 1 and kept.adjusted  # nearest stage that is still on
    forced = apply_envelope([zone], [], NOW_S, peak_power_cap_kw=0.5).commands[0]
    assert forced.stage == 0 and forced.cap_forced


def test_ramp_limit_spreads_a_big_change_over_intervals() -> None:
    state = EquipmentState(stage=0, last_command_s=NOW_S - 60.0)
    zone = ZoneInput(heat_pump_zone(ramp=1.0), state, 15.0, Proposal(3, 21.0, 24.0))
    result = apply_envelope([zone], [], NOW_S, None)
    assert result.commands[0].stage == 1  # 1 kW per minute, one minute since the last command
    zone = ZoneInput(zone.plant, result.states[0], 15.0, zone.proposal)
    assert apply_envelope([zone], [], NOW_S + 120.0, None).commands[0].stage == 3


def test_cycles_per_hour_stop_further_starts() -> None:
    starts = tuple(NOW_S - 500.0 - 600.0 * k for k in range(6))
    state = EquipmentState(stage=0, last_switch_s=NOW_S - 400.0, start_times_s=starts)
    zone = ZoneInput(heat_pump_zone(), state, 15.0, Proposal(3, 21.0, 24.0))
    assert apply_envelope([zone], [], NOW_S, None).commands[0].stage == 0
    later = apply_envelope([zone], [], NOW_S + 700.0, None)  # the oldest start left the hour
    assert later.commands[0].stage == 3


@pytest.mark.parametrize("temperature_c", [32.0, 40.0])
def test_heating_stops_when_the_zone_is_at_or_above_its_safe_maximum(temperature_c: float) -> None:
    zone = ZoneInput(heat_pump_zone(), EquipmentState(), temperature_c, Proposal(3, 21.0, 24.0))
    assert apply_envelope([zone], [], NOW_S, None).commands[0].stage == 0


def test_a_stored_override_message_converts_with_its_cancel_time_as_end() -> None:
    message = resources_pb2.Override(
        override_id="5b1a2c1e-0d4f-4a5e-9a43-0c5f0a9a9b11",
        building_id="office",
        zone_id="a",
        kind=resources_pb2.OVERRIDE_KIND_SETPOINT,
        heating_setpoint_c=19.0,
        cooling_setpoint_c=26.0,
        reason="meeting",
    )
    message.create_time.FromSeconds(1000)
    message.expire_time.FromSeconds(5000)
    message.cancel_time.FromSeconds(2000)
    override = Override.from_proto(message)
    assert override.kind is OverrideKind.SETPOINT and override.zone_id == "a"
    assert (override.create_s, override.expire_s) == (1000.0, 2000.0)
    assert (override.heating_setpoint_c, override.cooling_setpoint_c) == (19.0, 26.0)
    building_wide = resources_pb2.Override(kind=resources_pb2.OVERRIDE_KIND_EMERGENCY)
    assert Override.from_proto(building_wide).zone_id is None


def test_a_negative_or_nan_cap_is_refused_rather_than_looped_on() -> None:
    zone = ZoneInput(heat_pump_zone(), EquipmentState(), 15.0, Proposal(3, 21.0, 24.0))
    for cap_kw in (-1.0, math.nan):
        with pytest.raises(ValueError, match="peak_power_cap_kw"):
            apply_envelope([zone], [], NOW_S, cap_kw)
