"""The architecture JSON: round trips, and validation errors that name the field and the file."""

from __future__ import annotations

import copy
import json

import pytest

from hitdet.architecture import Architecture, ArchitectureError, from_dict, load_architecture
from search_spaces.structure import DetectorStructure

RELEASED_BACKBONE = (
    "ir_k3_e3 ir_k3_e3 ir_k3_e3_d2 ir_k3_e3 ir_k5_e6 ir_k5_e6 ir_k3_e3 ir_k3_e3 ir_k7_e6 ir_k5_e6 "
    "ir_k5_e6_d2 ir_k5_e3 ir_k5_e6 ir_k5_e6_d2 ir_k5_e6 ir_k5_e6_d2 ir_k7_e6 ir_k5_e6 ir_k5_e6_d2 ir_k5_e6"
).split()


def test_preset_is_the_released_detector():
    arch = load_architecture("hit-detector")
    st = arch.structure
    assert [len(s) for s in st.stages] == [4, 4, 8, 4]
    assert [b.out_channels for b in st.stages[2]] == [184] * 4 + [256] * 4
    assert [b.stride for s in st.stages for b in s] == [2, 1, 1, 1] * 2 + [2] + [1] * 7 + [2, 1, 1, 1]
    assert [(t.op, t.out_channels) for t in st.tail] == [("ir_k3_e3", 1024), ("conv_k1", 2048)]
    sample = arch.sample()
    assert [sample[label] for label in st.backbone_labels()] == RELEASED_BACKBONE
    assert sample["neck/lateral1"] == "sep_k5_d3" and sample["neck/out4"] == "sep_k3_d3"
    assert [sample[label] for label in st.head_labels()] == ["ir_k5_e6", "ir_k3_e6", "ir_k5_e6", "ir_k5_e6"]
    assert arch.settings.num_classes == 81


def test_round_trip_through_json_and_sample(tmp_path):
    arch = load_architecture("hit-detector")
    path = arch.save(tmp_path / "a.json")
    again = load_architecture(str(path))
    assert again.to_dict() == arch.to_dict()
    rebuilt = Architecture.from_sample(arch.sample(), arch.structure, arch.settings, name=arch.name,
                                       metadata=arch.metadata)
    assert rebuilt.to_dict() == arch.to_dict()
    assert list(arch.sample()) == DetectorStructure().labels()


def _mutate(path: str, value):
    data = copy.deepcopy(load_architecture("hit-detector").to_dict())
    keys = path.split(".")
    obj = data
    for k in keys[:-1]:
        obj = obj[int(k)] if isinstance(obj, list) else obj[k]
    last = keys[-1]
    if value is KeyError:
        del obj[last]
    elif isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value
    return data


BAD = [
    ("version", 2, "version: unsupported version 2"),
    ("format", "other", "format: expected 'hitdet-architecture'"),
    ("backbone.stages.1.2.op", "ir_k9_e6", r"backbone.stages\[1\]\[2\].op: unknown op 'ir_k9_e6'"),
    ("neck.cells", ["sep_k3"] * 7, "neck.cells: expected 8 ops, got 7"),
    ("backbone.stages.0.0.out_channels", "48", r"backbone.stages\[0\]\[0\].out_channels: expected int, got str"),
    ("head.fc_channels", True, "head.fc_channels: expected int, got bool"),
    ("head", KeyError, "head: missing"),
    ("detector.num_classes", 1, "detector.num_classes"),
    ("detector.type", "yolo", "detector.type: unknown detector type 'yolo'"),
    ("detector.bogus", 1, r"detector: unknown key\(s\) \['bogus'\]"),
    ("detector.box_nms_thresh", 1.5, "detector.box_nms_thresh: must be between 0 and 1"),
    ("backbone.stages", [[]] * 4, r"backbone.stages\[0\]: a stage needs at least one block"),
]


@pytest.mark.parametrize("field,value,message", BAD)
def test_validation_names_field_and_source(tmp_path, field, value, message):
    data = _mutate(field, value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ArchitectureError, match=message) as info:
        load_architecture(str(path))
    assert str(info.value).startswith(str(path))


def test_grouped_op_channels_are_checked():
    data = _mutate("backbone.stages.0.1.op", "ir_k3_e1_g2")
    from_dict(data, "x.json")  # 48 -> 48 divides by 2
    data["backbone"]["stages"][0][0]["out_channels"] = 47
    message = r"x.json: backbone.stages\[0\]\[1\].op: op ir_k3_e1_g2 .*in_channels=47"
    with pytest.raises(ArchitectureError, match=message):
        from_dict(data, "x.json")


def test_unreadable_inputs(tmp_path):
    with pytest.raises(ArchitectureError, match="no such file"):
        load_architecture(str(tmp_path / "missing.json"))
    truncated = tmp_path / "t.json"
    truncated.write_text(json.dumps(load_architecture("hit-detector").to_dict())[:200])
    with pytest.raises(ArchitectureError, match=r"t.json: invalid JSON"):
        load_architecture(str(truncated))
    with pytest.raises(ArchitectureError, match="no preset of that name"):
        load_architecture("not-a-preset")


def test_from_sample_needs_every_label():
    sample = load_architecture("hit-detector").sample()
    del sample["head/b2"]
    with pytest.raises(ArchitectureError, match="head/b2"):
        Architecture.from_sample(sample)
