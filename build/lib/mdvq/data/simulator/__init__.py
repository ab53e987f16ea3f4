"""Embedded physics micro-Doppler simulator (docs/data.md): skeleton -> radar returns.

Modules, one concept each: `physics` (wavelength, ellipsoid RCS, point returns, noise),
`kinematics` (skeleton, forward kinematics, Boulic walking with planted feet),
`activities` (in-place activities, fall, rotor, bird), `scenario` (`SimConfig`, subjects,
per-example draws and placement) and `source` (`RadarSimulatorSource`: clutter removal,
spectrograms, cache).
"""

from mdvq.data.simulator.activities import (
    ACTIVITY_CURVES,
    ACTIVITY_DURATION_S,
    activity_pose,
    bird_returns,
    fall_angle,
    fall_joints,
    falling_pose,
    rotor_returns,
)
from mdvq.data.simulator.kinematics import (
    BODY_SEGMENTS,
    CONTACT_JOINTS,
    Pose,
    body_dimensions,
    body_scatterers,
    plant_feet,
    skeleton_joints,
    to_world,
    walking_cycle,
    walking_joints,
    walking_pose,
)
from mdvq.data.simulator.physics import (
    add_noise,
    ellipsoid_amplitudes,
    ellipsoid_rcs,
    simulate_returns,
    wavelength_m,
)
from mdvq.data.simulator.scenario import (
    DEFAULT_CLASSES,
    EXTRA_CLASSES,
    HUMAN_CLASSES,
    VALID_CLASSES,
    SimConfig,
    Subject,
    example_joints,
    human_returns,
    make_subject,
    place_body,
    simulate_example,
)
from mdvq.data.simulator.source import DEFAULT_STFT, SIMULATOR_VERSION, RadarSimulatorSource

__all__ = [
    "ACTIVITY_CURVES", "ACTIVITY_DURATION_S", "BODY_SEGMENTS", "CONTACT_JOINTS",
    "DEFAULT_CLASSES", "DEFAULT_STFT", "EXTRA_CLASSES", "HUMAN_CLASSES", "SIMULATOR_VERSION",
    "VALID_CLASSES", "Pose", "RadarSimulatorSource", "SimConfig", "Subject", "activity_pose",
    "add_noise", "bird_returns", "body_dimensions", "body_scatterers", "ellipsoid_amplitudes",
    "ellipsoid_rcs", "example_joints", "fall_angle", "fall_joints", "falling_pose",
    "human_returns", "make_subject", "place_body", "plant_feet", "rotor_returns",
    "simulate_example", "simulate_returns", "skeleton_joints", "to_world", "walking_cycle",
    "walking_joints", "walking_pose", "wavelength_m",
]
