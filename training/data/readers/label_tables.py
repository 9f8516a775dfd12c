"""Native label spaces of the datasets hiseg_ros reads, as their own documentation defines them.

These are facts of the on-disk formats (ids, names, colours), shared by the
readers, the synthetic-data writers and the evaluation. How each native id maps
onto the semantic hierarchy is *not* here: that lives in the hierarchy YAML.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CityscapesLabel:
    id: int
    name: str
    train_id: int  # 255 = not evaluated
    color: tuple[int, int, int]


# Cityscapes labels (cityscapesscripts/helpers/labels.py facts): labelId, name, trainId, colour.
CITYSCAPES_LABELS: tuple[CityscapesLabel, ...] = tuple(
    CityscapesLabel(*row)
    for row in (
        (0, "unlabeled", 255, (0, 0, 0)),
        (1, "ego vehicle", 255, (0, 0, 0)),
        (2, "rectification border", 255, (0, 0, 0)),
        (3, "out of roi", 255, (0, 0, 0)),
        (4, "static", 255, (0, 0, 0)),
        (5, "dynamic", 255, (111, 74, 0)),
        (6, "ground", 255, (81, 0, 81)),
        (7, "road", 0, (128, 64, 128)),
        (8, "sidewalk", 1, (244, 35, 232)),
        (9, "parking", 255, (250, 170, 160)),
        (10, "rail track", 255, (230, 150, 140)),
        (11, "building", 2, (70, 70, 70)),
        (12, "wall", 3, (102, 102, 156)),
        (13, "fence", 4, (190, 153, 153)),
        (14, "guard rail", 255, (180, 165, 180)),
        (15, "bridge", 255, (150, 100, 100)),
        (16, "tunnel", 255, (150, 120, 90)),
        (17, "pole", 5, (153, 153, 153)),
        (18, "polegroup", 255, (153, 153, 153)),
        (19, "traffic light", 6, (250, 170, 30)),
        (20, "traffic sign", 7, (220, 220, 0)),
        (21, "vegetation", 8, (107, 142, 35)),
        (22, "terrain", 9, (152, 251, 152)),
        (23, "sky", 10, (70, 130, 180)),
        (24, "person", 11, (220, 20, 60)),
        (25, "rider", 12, (255, 0, 0)),
        (26, "car", 13, (0, 0, 142)),
        (27, "truck", 14, (0, 0, 70)),
        (28, "bus", 15, (0, 60, 100)),
        (29, "caravan", 255, (0, 0, 90)),
        (30, "trailer", 255, (0, 0, 110)),
        (31, "train", 16, (0, 80, 100)),
        (32, "motorcycle", 17, (0, 0, 230)),
        (33, "bicycle", 18, (119, 11, 32)),
        (-1, "license plate", 255, (0, 0, 142)),
    )
)
CITYSCAPES_NUM_TRAIN_IDS = 19
# Ids that can appear in a *_gtFine_labelIds.png (uint8; -1 only exists in instance maps).
CITYSCAPES_PNG_IDS: frozenset[int] = frozenset(label.id for label in CITYSCAPES_LABELS if label.id >= 0)


@dataclass(frozen=True)
class VistasLabel:
    name: str
    readable: str
    color: tuple[int, int, int]
    instances: bool
    evaluate: bool


# Mapillary Vistas v1.2 config.json "labels": list index == PNG pixel value.
VISTAS_V12_LABELS: tuple[VistasLabel, ...] = tuple(
    VistasLabel(name, readable, color, instances, name != "void--unlabeled")
    for name, readable, color, instances in (
        ("animal--bird", "Bird", (165, 42, 42), True),
        ("animal--ground-animal", "Ground Animal", (0, 192, 0), True),
        ("construction--barrier--curb", "Curb", (196, 196, 196), False),
        ("construction--barrier--fence", "Fence", (190, 153, 153), False),
        ("construction--barrier--guard-rail", "Guard Rail", (180, 165, 180), False),
        ("construction--barrier--other-barrier", "Barrier", (90, 120, 150), False),
        ("construction--barrier--wall", "Wall", (102, 102, 156), False),
        ("construction--flat--bike-lane", "Bike Lane", (128, 64, 255), False),
        ("construction--flat--crosswalk-plain", "Crosswalk - Plain", (140, 140, 200), True),
        ("construction--flat--curb-cut", "Curb Cut", (170, 170, 170), False),
        ("construction--flat--parking", "Parking", (250, 170, 160), False),
        ("construction--flat--pedestrian-area", "Pedestrian Area", (96, 96, 96), False),
        ("construction--flat--rail-track", "Rail Track", (230, 150, 140), False),
        ("construction--flat--road", "Road", (128, 64, 128), False),
        ("construction--flat--service-lane", "Service Lane", (110, 110, 110), False),
        ("construction--flat--sidewalk", "Sidewalk", (244, 35, 232), False),
        ("construction--structure--bridge", "Bridge", (150, 100, 100), False),
        ("construction--structure--building", "Building", (70, 70, 70), False),
        ("construction--structure--tunnel", "Tunnel", (150, 120, 90), False),
        ("human--person", "Person", (220, 20, 60), True),
        ("human--rider--bicyclist", "Bicyclist", (255, 0, 0), True),
        ("human--rider--motorcyclist", "Motorcyclist", (255, 0, 100), True),
        ("human--rider--other-rider", "Other Rider", (255, 0, 200), True),
        ("marking--crosswalk-zebra", "Lane Marking - Crosswalk", (200, 128, 128), True),
        ("marking--general", "Lane Marking - General", (255, 255, 255), False),
        ("nature--mountain", "Mountain", (64, 170, 64), False),
        ("nature--sand", "Sand", (230, 160, 50), False),
        ("nature--sky", "Sky", (70, 130, 180), False),
        ("nature--snow", "Snow", (190, 255, 255), False),
        ("nature--terrain", "Terrain", (152, 251, 152), False),
        ("nature--vegetation", "Vegetation", (107, 142, 35), False),
        ("nature--water", "Water", (0, 170, 30), False),
        ("object--banner", "Banner", (255, 255, 128), True),
        ("object--bench", "Bench", (250, 0, 30), True),
        ("object--bike-rack", "Bike Rack", (100, 140, 180), True),
        ("object--billboard", "Billboard", (220, 220, 220), True),
        ("object--catch-basin", "Catch Basin", (220, 128, 128), True),
        ("object--cctv-camera", "CCTV Camera", (222, 40, 40), True),
        ("object--fire-hydrant", "Fire Hydrant", (100, 170, 30), True),
        ("object--junction-box", "Junction Box", (40, 40, 40), True),
        ("object--mailbox", "Mailbox", (33, 33, 33), True),
        ("object--manhole", "Manhole", (100, 128, 160), True),
        ("object--phone-booth", "Phone Booth", (142, 0, 0), True),
        ("object--pothole", "Pothole", (70, 100, 150), False),
        ("object--street-light", "Street Light", (210, 170, 100), True),
        ("object--support--pole", "Pole", (153, 153, 153), True),
        ("object--support--traffic-sign-frame", "Traffic Sign Frame", (128, 128, 128), True),
        ("object--support--utility-pole", "Utility Pole", (0, 0, 80), True),
        ("object--traffic-light", "Traffic Light", (250, 170, 30), True),
        ("object--traffic-sign--back", "Traffic Sign (Back)", (192, 192, 192), True),
        ("object--traffic-sign--front", "Traffic Sign (Front)", (220, 220, 0), True),
        ("object--trash-can", "Trash Can", (140, 140, 20), True),
        ("object--vehicle--bicycle", "Bicycle", (119, 11, 32), True),
        ("object--vehicle--boat", "Boat", (150, 0, 255), True),
        ("object--vehicle--bus", "Bus", (0, 60, 100), True),
        ("object--vehicle--car", "Car", (0, 0, 142), True),
        ("object--vehicle--caravan", "Caravan", (0, 0, 90), True),
        ("object--vehicle--motorcycle", "Motorcycle", (0, 0, 230), True),
        ("object--vehicle--on-rails", "On Rails", (0, 80, 100), False),
        ("object--vehicle--other-vehicle", "Other Vehicle", (128, 64, 64), True),
        ("object--vehicle--trailer", "Trailer", (0, 0, 110), True),
        ("object--vehicle--truck", "Truck", (0, 0, 70), True),
        ("object--vehicle--wheeled-slow", "Wheeled Slow", (0, 0, 192), True),
        ("void--car-mount", "Car Mount", (32, 32, 32), False),
        ("void--ego-vehicle", "Ego Vehicle", (120, 10, 10), False),
        ("void--unlabeled", "Unlabeled", (0, 0, 0), False),
    )
)
VISTAS_V12_ID = {label.name: index for index, label in enumerate(VISTAS_V12_LABELS)}

# GTSDB / GTSRB class ids 0..42 (German Traffic Sign Detection Benchmark readme).
GTSDB_CLASSES: tuple[str, ...] = (
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no overtaking",
    "no overtaking (trucks)",
    "priority at next intersection",
    "priority road",
    "give way",
    "stop",
    "no traffic both ways",
    "no trucks",
    "no entry",
    "danger",
    "bend left",
    "bend right",
    "bend",
    "uneven road",
    "slippery road",
    "road narrows",
    "construction",
    "traffic signal",
    "pedestrian crossing",
    "school crossing",
    "cycles crossing",
    "snow",
    "animals",
    "restriction ends",
    "go right",
    "go left",
    "go straight",
    "go right or straight",
    "go left or straight",
    "keep right",
    "keep left",
    "roundabout",
    "restriction ends (overtaking)",
    "restriction ends (overtaking trucks)",
)
GTSDB_SUPERCLASS: dict[str, frozenset[int]] = {
    "prohibitory": frozenset({0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16}),
    "danger": frozenset({11, *range(18, 32)}),
    "mandatory": frozenset(range(33, 41)),
    "other": frozenset({6, 12, 13, 14, 17, 32, 41, 42}),
}
# GTSDB classes that are each other's mirror image: a horizontally flipped image of one shows the
# other. A fact of the native classes (the signs' design), so it is declared here, in native ids,
# once: the GTSDB reader offers it to the augmentation (which swaps the pair when it mirrors a crop,
# before the hierarchy maps ids to classes; a hierarchy may merge or drop classes, the pairs stay),
# and the synthetic renderer draws each pair as mirror images (tested against this table).
GTSDB_MIRROR_PAIRS: tuple[tuple[int, int], ...] = (
    (19, 20),  # bend left / bend right
    (33, 34),  # go right / go left (turn ahead)
    (36, 37),  # go right or straight / go left or straight
    (38, 39),  # keep right / keep left
)

# Image-level tag vocabulary of OpenScapes (Open Images street scenes, IV 2019).
OPENSCAPES_TAGS: tuple[str, ...] = (
    "bicycle",
    "bus",
    "car",
    "motorcycle",
    "train",
    "truck",
    "person",
    "man",
    "woman",
    "boy",
    "girl",
    "traffic light",
    "traffic sign",
    "stop sign",
)
