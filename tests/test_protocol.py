"""The catalysis protocol schema: defaults, validation errors and the shipped examples."""
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from reactforge.schemas.protocol import Protocol, load_protocol

ROOT = Path(__file__).resolve().parents[1]


def minimal(**over):
    data = {
        "name": "t",
        "bulk": {"name": "Pt", "crystalstructure": "fcc", "a_A": 3.92},
        "surface": {"miller": [1, 1, 1], "layers": 1, "size": [2, 2], "fixed_bottom_layers": 1},
        "active_site": {"kind": "site_index", "index": 0},
        "intermediates": {
            "H2": {"fragments": [{"symbols": "HH", "positions_A": [[0, 0, 2.0], [0.74, 0, 2.0]]}]},
            "2H": {"fragments": [{"symbols": "HH", "positions_A": [[0, 0, 1.0], [2.8, 0, 1.0]]}]},
        },
        "reactions": [{"name": "r", "initial": "H2", "final": "2H"}],
    }
    data.update(over)
    return data


def test_thesis_defaults():
    p = Protocol.model_validate(minimal())
    assert p.workflow == "catalysis"
    assert p.sigma_thr_eV == 0.05
    assert p.reference.code == "xtb" and p.model.model == "gap"
    assert p.blocks == [0, 1, 2, 3, 4, 5, 6]
    b = p.parameters
    assert (b.b0_initial.n_rattled, b.b0_initial.rattle_sigma_A, b.b0_initial.strain_sigma) == (10, 0.02, 0.01)
    assert b.b1_bulk.md_steps == 10000 and b.b1_bulk.temperature_K == 300.0
    assert b.b3_adsorbate_seed.dimers_per_pair == 4
    assert b.b3_adsorbate_seed.dimer_max_force_eV_per_A == 20.0
    assert b.b3_adsorbate_seed.dimer_weight == 0.2
    assert b.b3_adsorbate_seed.placement_radius_A == 3.0 and b.b3_adsorbate_seed.fps_per_intermediate == 3
    assert b.b4_adsorbate_md.md_steps == 1000
    assert b.b5_geometry.fmax_criterion_eV_per_A == 0.2
    assert b.b6_neb.energy_criterion_eV == 0.05 and b.b6_neb.precon == "Exp"
    assert p.surface.fixed_bottom_layers == 1


def test_surface_defaults_to_two_fixed_layers():
    d = minimal()
    d["surface"].pop("fixed_bottom_layers")
    assert Protocol.model_validate(d).surface.fixed_bottom_layers == 2


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"bogus": 1}, "bogus"),
        ({"sigma_thr_eV": -1}, "sigma_thr_eV"),
        ({"blocks": [0, 7]}, "blocks"),
        ({"reactions": [{"name": "r", "initial": "H2", "final": "nope"}]}, "nope"),
        ({"bulk": {"name": "Pt", "file": "x.cif"}}, "bulk"),
        ({"surface": {"miller": [1, 1, 1], "fixed_bottom_layers": 1, "fixed_bottom_atoms": 4}}, "fixed_bottom"),
        ({"surface": {"miller": [1, 1, 1], "size": [[1, 1], [1, 1]]}}, "determinant"),
        ({"parameters": {"b6_neb": {"method": "improvedtangent", "precon": "Exp"}}}, "precon"),
        ({"parameters": {"b1_bulk": {"md_step": 10}}}, "md_step"),
        ({"active_site": {"kind": "vacancy", "element": "O", "rule": "random"}}, "rule"),
    ],
)
def test_bad_input_names_the_field(patch, field):
    with pytest.raises(ValidationError) as err:
        Protocol.model_validate(minimal(**patch))
    assert field in str(err.value)


def test_reaction_endpoints_must_match_in_composition():
    d = minimal()
    d["intermediates"]["2H"] = {"fragments": [{"molecule": "CO", "position_A": [0, 0, 2]}]}
    with pytest.raises(ValidationError, match="same adsorbate"):
        Protocol.model_validate(d)


def test_fragment_needs_one_form():
    d = minimal()
    d["intermediates"]["H2"] = {"fragments": [{"molecule": "H2", "symbols": "HH", "positions_A": [[0, 0, 0], [1, 0, 0]]}]}
    with pytest.raises(ValidationError, match="either"):
        Protocol.model_validate(d)


def test_json_schema_exports():
    schema = Protocol.model_json_schema()
    assert schema["additionalProperties"] is False
    assert "sigma_thr_eV" in schema["properties"]


def test_quickstart_validates_and_resolves_paths(tmp_path):
    p = load_protocol(ROOT / "examples" / "quickstart.yaml")
    assert p.validation.enabled
    assert len(p.reactions) >= 2
    assert p.reference.code == "xtb"
    # every reaction's adsorbate has like atoms to permute (two O of CO2, two H of H2)
    for r in p.reactions:
        syms = p.intermediates[r.initial].adsorbate_symbols()
        assert len(set(syms)) < len(syms)
    # relative paths resolve against the protocol's folder
    d = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    d["bulk"] = {"file": "bulk.cif"}
    f = tmp_path / "sub" / "p.yaml"
    f.parent.mkdir()
    f.write_text(yaml.safe_dump(d))
    assert load_protocol(f).resolve("bulk.cif") == f.parent.resolve() / "bulk.cif"


def test_one_loader_records_the_folder_for_every_workflow(tmp_path, monkeypatch):
    """schemas.loading.load_protocol picks the schema from the file (as the command line does), records
    the file's folder, and protocol.resolve is then how any relative name in it becomes a path."""
    from reactforge.schemas.batch import BatchProtocol
    from reactforge.schemas.loading import InputError
    from reactforge.schemas.loading import load_protocol as load
    from reactforge.schemas.nmr import NMRProtocol

    schemas = {"catalysis": Protocol, "nmr": NMRProtocol, "tasks": BatchProtocol}

    def pick(data):
        if data.get("workflow", "catalysis") not in schemas:
            raise InputError("p.yaml", ["unknown workflow"])
        return schemas[data.get("workflow", "catalysis")]

    for example in ("quickstart", "nmr_precomputed", "singlepoints"):
        p = load(ROOT / "examples" / f"{example}.yaml", pick)
        assert p.base_dir == (ROOT / "examples").resolve()
        assert p.resolve("structures/x.xyz") == (ROOT / "examples").resolve() / "structures" / "x.xyz"
        assert p.resolve("/abs/x.xyz") == Path("/abs/x.xyz")
    bad = tmp_path / "bad.yaml"
    bad.write_text("workflow: nope\nname: x\n")
    with pytest.raises(InputError, match="unknown workflow"):
        load(bad, pick)
    monkeypatch.chdir(tmp_path)  # a protocol built in code resolves against the working directory
    assert Protocol.model_validate(minimal()).resolve("bulk.cif") == tmp_path / "bulk.cif"
