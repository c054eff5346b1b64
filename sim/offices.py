"""Reference buildings for tests, demos and benchmarks (their parameters are ground truth)."""

from __future__ import annotations

from sim.building import (
    BuildingSpec,
    ComfortBands,
    Coupling,
    EquipmentSpec,
    ZoneSpec,
)
from svc_control.plant import EquipmentKind
from svc_control.schedules import office_hours

# Per square metre of floor: figures typical of a mid-weight office (air plus furnishings; a
# concrete slab as thermal mass; a heat pump sized for about 50 W/m² of heat at COP 3).
AIR_KWH_PER_K_M2 = 0.004
MASS_KWH_PER_K_M2 = 0.04
AIR_MASS_KW_PER_K_M2 = 0.006
PERIMETER_UA_KW_PER_K_M2 = 0.002
CORE_UA_KW_PER_K_M2 = 0.0006
STAGE_KW_PER_M2 = (0.0, 0.006, 0.012, 0.018)


def office_zone(
    zone_id: str,
    floor_area_m2: float,
    envelope_ua_kw_per_k_m2: float,
    solar_aperture_m2: float,
    kind: EquipmentKind = EquipmentKind.HEATING,
) -> ZoneSpec:
    """An open-plan office zone occupied on weekdays 7:00-19:00."""
    return ZoneSpec(
        zone_id=zone_id,
        floor_area_m2=floor_area_m2,
        air_capacity_kwh_per_k=AIR_KWH_PER_K_M2 * floor_area_m2,
        mass_capacity_kwh_per_k=MASS_KWH_PER_K_M2 * floor_area_m2,
        air_mass_resistance_k_per_kw=1.0 / (AIR_MASS_KW_PER_K_M2 * floor_area_m2),
        envelope_resistance_k_per_kw=1.0 / (envelope_ua_kw_per_k_m2 * floor_area_m2),
        equipment=EquipmentSpec(kind, tuple(round(s * floor_area_m2, 3) for s in STAGE_KW_PER_M2)),
        occupancy=(office_hours(7.0, 19.0),),
        occupied_gain_w_per_m2=12.0,
        unoccupied_gain_w_per_m2=2.0,
        solar_aperture_m2=solar_aperture_m2,
        comfort=ComfortBands(occupied=(21.0, 24.0), unoccupied=(15.0, 30.0)),
    )


def five_zone_office(time_zone: str = "Europe/Paris") -> BuildingSpec:
    """Four perimeter zones around a core, 900 m², heat pumps, one storey.

    Each perimeter zone touches the core and its two neighbours; the south zone gets the most
    sun and the north zone the least. Solar apertures are effective areas (glazing area times
    its solar heat gain coefficient): about 27 m² of glass at 0.4 on the south facade.
    """
    perimeter = PERIMETER_UA_KW_PER_K_M2
    zones = (
        office_zone("north", 150.0, perimeter, 2.0),
        office_zone("east", 150.0, perimeter, 7.0),
        office_zone("south", 150.0, perimeter, 11.0),
        office_zone("west", 150.0, perimeter, 7.0),
        office_zone("core", 300.0, CORE_UA_KW_PER_K_M2, 0.0),
    )
    couplings = tuple(Coupling(side, "core", 4.0) for side in ("north", "east", "south", "west"))
    couplings += (
        Coupling("north", "east", 8.0),
        Coupling("east", "south", 8.0),
        Coupling("south", "west", 8.0),
        Coupling("west", "north", 8.0),
    )
    return BuildingSpec(zones=zones, couplings=couplings, time_zone=time_zone)
