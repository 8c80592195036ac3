"""Experiment plans (`vgg.suite.plan`): the experiment files against the paper's tables, init
chains and training order, seeds, the ablation pairs, and bad files as clear errors."""

import subprocess
from pathlib import Path

import pytest

from tests.test_runner import runner
from vgg.suite.plan import TABLES, load_catalog, load_experiment, plan_runs

ROOT = Path(__file__).resolve().parent.parent


def evaluations(name, catalog):
    return [(e.run, e.method, e.scales) for e in load_experiment(name, catalog).evaluations]


def test_table3_is_the_papers_twelve_rows(catalog):
    assert evaluations("table3", catalog) == [
        ("A-256", "dense", (256,)), ("A-LRN-256", "dense", (256,)), ("B-256", "dense", (256,)),
        ("C-256", "dense", (256,)), ("C-384", "dense", (384,)), ("C-256-512", "dense", (384,)),
        ("D-256", "dense", (256,)), ("D-384", "dense", (384,)), ("D-256-512", "dense", (384,)),
        ("E-256", "dense", (256,)), ("E-384", "dense", (384,)), ("E-256-512", "dense", (384,)),
    ]


def test_table4_and_5_use_the_papers_multi_scale_sets(catalog):
    table4 = {run: scales for run, _, scales in evaluations("table4", catalog)}
    assert table4["B-256"] == (224, 256, 288) and table4["C-384"] == (352, 384, 416) and table4["E-256-512"] == (256, 384, 512)
    assert len(table4) == 10 and all(method == "dense" for _, method, _ in evaluations("table4", catalog))
    table5 = evaluations("table5", catalog)
    assert [(run, method) for run, method, _ in table5] == [
        (run, method) for run in ("D-256-512", "E-256-512") for method in ("dense", "multi-crop", "multi-crop+dense")
    ]
    assert {scales for _, _, scales in table5} == {(256, 384, 512)}


def test_table6_fusions_and_their_members(catalog):
    fusions = load_experiment("table6", catalog).fusions
    assert [len(f.members) for f in fusions] == [7, 2, 2, 2]
    # the submission's multi-scale D was fine-tuned on its FC layers only (Sect. 4.4): D-256-512-fc, not D-256-512
    assert [m.run for m in fusions[0].members] == ["D-256", "D-384", "D-256-512-fc", "C-256", "C-384", "E-256", "E-384"]
    assert catalog["D-256-512-fc"].freeze == "features" and catalog["D-256-512-fc"].parent == "D-384" and catalog["D-256-512"].freeze == "none"
    assert fusions[0].members[2].scales == (256, 384, 512) and [m.run for m in fusions[1].members] == ["D-256-512", "E-256-512"]
    assert fusions[0].members[1].scales == (352, 384, 416)
    assert [f.method for f in fusions] == ["dense", "dense", "multi-crop", "multi-crop+dense"]


def test_the_makefile_has_a_target_for_each_experiment_file():
    made = subprocess.run(["make", "--no-print-directory", "--eval", "tables: ; @echo $(RESULT_TABLES)", "tables"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tuple(made.stdout.split()) == TABLES == ("table3", "table4", "table5", "table6", "table7", "table8", "table9", "table10", "table11", "table12", "ablations")


def test_init_chains_and_training_order(catalog):
    assert catalog["D-256"].parent == "A-256" and catalog["D-384"].parent == "D-256" and catalog["D-256-512"].parent == "D-384"
    assert catalog["A-256"].parent is None and catalog["E-256-gaussian"].init == "paper" and catalog["D-256"].init == "from:A-256"
    order = [run.id for run in plan_runs(load_experiment("table5", catalog), catalog)]
    assert order == ["A-256", "D-256", "D-384", "D-256-512", "E-256", "E-384", "E-256-512"]
    for name in TABLES:
        runs = plan_runs(load_experiment(name, catalog), catalog)
        ids = [r.id for r in runs]
        assert all(r.parent is None or ids.index(r.parent) < ids.index(r.id) for r in runs), name


def test_seeds_expand_into_runs_with_their_own_init_chains(ci_data, tmp_path, catalog):
    experiment = load_experiment("table5", catalog)
    assert plan_runs(experiment, catalog, seeds=1) == plan_runs(experiment, catalog)
    runs = plan_runs(experiment, catalog, seeds=3)
    assert [r.id for r in runs[:7]] == ["A-256", "D-256", "D-384", "D-256-512", "E-256", "E-384", "E-256-512"]
    assert [r.id for r in runs[7:14]] == ["A-256-seed1", "D-256-seed1", "D-384-seed1", "D-256-512-seed1", "E-256-seed1", "E-384-seed1", "E-256-512-seed1"]
    seeded = {r.id: r for r in runs}
    assert seeded["D-384-seed2"].parent == "D-256-seed2" and seeded["D-256-seed2"].parent == "A-256-seed2" and seeded["A-256-seed2"].init == "random"
    assert seeded["D-384-seed2"].catalog_id == "D-384" and seeded["D-384-seed2"].seed == 2 and seeded["D-384"].seed == 0
    ids = [r.id for r in runs]
    assert all(r.parent is None or ids.index(r.parent) < ids.index(r.id) for r in runs)
    # seed 0 trains exactly as before seeds existed (same folder, same run hash); seed k trains with seed k from its own parent
    local = runner(ci_data, tmp_path, seeds=3)
    first, second = local.train_config(seeded["D-384"]), local.train_config(seeded["D-384-seed2"])
    assert local.run_dir("D-384") == tmp_path / "runs" / "ci" / "D-384" and first.seed == 0 and first.init == f"from:{tmp_path / 'runs' / 'ci' / 'D-256'}"
    assert first.run_hash() == runner(ci_data, tmp_path).train_config(catalog["D-384"]).run_hash()
    assert second.seed == 2 and second.init == f"from:{tmp_path / 'runs' / 'ci' / 'D-256-seed2'}" and second.run_hash() != first.run_hash()
    spec = experiment.evaluations[0]
    assert local.scores_path(spec).name == f"{spec.key}.pt" and local.scores_path(spec, 2).name == f"{spec.key}__seed2.pt"
    with pytest.raises(ValueError, match="at least 1"):
        plan_runs(experiment, catalog, seeds=0)


def test_ablations_cover_the_papers_comparisons(catalog):
    ablations = {a.name: a for a in load_experiment("ablations", catalog).ablations}
    pairs = {name: [p.label for p in a.pairs()] for name, a in ablations.items()}
    assert pairs["depth"] == ["B-256 vs A-256", "D-256 vs B-256", "E-256 vs D-256"]
    assert pairs["1x1 vs 3x3"] == ["D-256 vs C-256", "D-384 vs C-384", "D-256-512 vs C-256-512"]
    assert pairs["extra non-linearity (C vs B)"] == ["C-256 vs B-256"]
    assert pairs["training scale"] == [f"{x}-256-512 vs {x}-{s}" for x in "CDE" for s in ("256", "384")]
    assert len(pairs["test scale"]) == 10 and pairs["test scale"][0] == "B-256 Q=224,256,288 vs B-256 Q=256"
    assert pairs["evaluation method"][:3] == [
        "D-256-512 multi-crop vs D-256-512 dense", "D-256-512 multi-crop+dense vs D-256-512 dense", "D-256-512 multi-crop+dense vs D-256-512 multi-crop",
    ]
    assert pairs["fusion"][1] == "post-submission D+E, dense vs its best member" and len(pairs["fusion"]) == 4
    # B-5x5 (random init) against B from the same init, and against B-256 (from A: confounded)
    assert pairs["B vs B-5x5"] == ["B-5x5-256 vs B-256-glorot", "B-5x5-256 vs B-256"]
    assert catalog["B-256-glorot"].init == "glorot" == catalog["B-5x5-256"].init and catalog["B-256"].parent == "A-256"
    assert sum(map(len, pairs.values())) == 40
    fusion = ablations["fusion"].entries[0]
    assert [m.run for m in fusion.members] == ["D-256", "D-384", "D-256-512-fc", "C-256", "C-384", "E-256", "E-384"] and fusion.members[1].scales == (352, 384, 416)


def test_bad_experiment_files_are_clear_errors(tmp_path, catalog):
    bad = tmp_path / "bad.toml"
    cases = [
        ('[[evaluation]]\nrun = "Z-256"\n', "unknown run 'Z-256'"),
        ('[[evaluation]]\nrun = "A-256"\nscales = "many"\n', 'scales must be "single", "multi"'),
        ('[[ablation]]\nname = "x"\npairs = "random"\nevaluation = [{ run = "A-256" }, { run = "B-256" }]\n', "pairs must be one of baseline, successive, all, best-member"),
        ('[[ablation]]\nname = "x"\npairs = "best-member"\nevaluation = [{ run = "A-256" }]\n', "every entry must be a fusion"),
        ('[[ablation]]\nname = "x"\ngroups = [[{ run = "A-256" }]]\n', "at least two entries"),
        # one line naming the file, the entry, the key and what is expected
        ('[[evaluation]]\nrun = "A-256"\nflip = "yes"\n', r'bad.toml, evaluation \{"run": "A-256", "flip": "yes"\}: flip = "yes" is not true or false$'),
        ('[[evaluation]]\nrunn = "A-256"\n', r"unknown key runn \(did you mean run\?\); known keys: run, method, scales, flip, label, paper_row$"),
        ("evaluation = 3\n", r"bad.toml: evaluation = 3 is not a list of tables \(\[\[evaluation\]\]\)$"),
        ('[[ablation]]\nname = "x"\nevaluation = [3, 4]\n', r"ablation 'x': evaluation = \[3, 4\] is not a list of entries"),
        ('[defaults]\nmethod = ["dense"]\n', r'bad.toml \[defaults\]: method = \["dense"\] is not a string: dense, multi-crop'),
        ('[[fusion]]\nlabel = "x"\n', r"fusion \{\"label\": \"x\"\}: missing key runs \(a list of runs of runs.toml\)$"),
        ('titel = "x"\n', r"bad.toml: unknown key titel \(did you mean title\?\)"),
    ]
    for text, message in cases:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_experiment(bad, catalog)
    with pytest.raises(ValueError, match="experiment file .*table99.toml does not exist"):
        load_experiment("table99", catalog)
    runs = tmp_path / "runs.toml"
    run_x = '[X]\nconfig = "A"\ntrain_scale = "256"\n'
    catalog_cases = [
        (run_x + 'init = "from:Y"\n[Y]\nconfig = "A"\ntrain_scale = "256"\ninit = "from:X"\n', "loops"),
        (run_x + 'init = "Y"\n[Y]\nconfig = "A"\ntrain_scale = "256"\n', "run X has init = 'Y'; init is random, paper, glorot or from:<run id> \\(a parent run is written from:Y\\)"),
        (run_x + 'init = "gaussian"\n', "run X has init = 'gaussian'; init is random, paper, glorot or from:<run id> \\(\"gaussian\" is now written \"paper\"\\)"),
        (run_x + 'init = "Z"\n', "run X has init = 'Z'; init is random, paper, glorot or from:<run id>$"),
        (run_x + 'init = 5\n', "runs.toml \\[X\\]: init = 5 is not a string: random, paper, glorot or from:<run id>$"),
        ('[X]\nconfig = ["A"]\ntrain_scale = "256"\n', 'runs.toml \\[X\\]: config = \\["A"\\] is not a string: a configuration of Table 1'),
        ('[X]\ntrain_scale = "256"\n', "runs.toml \\[X\\]: missing key config \\(a string: a configuration of Table 1"),
        ('[X]\nconfig = "A"\ntrain_scale = 100000\n', "runs.toml \\[X\\]: training scale 100000 is above the limit of 1024"),
        ('X = 3\n', "runs.toml \\[X\\] must be a table of keys, got 3"),
        (run_x + 'init = "from:Y"\n', "run X starts from 'from:Y', but 'Y' is not a run of runs.toml"),
        (run_x + 'init = "weights:torchvision:vgg16"\n', "run X has init = 'weights:torchvision:vgg16'; a catalogue run's init is random"),
        (run_x + 'freez = "features"\n', "runs.toml \\[X\\]: unknown key freez \\(did you mean freeze\\?\\); known keys: config, train_scale, init, freeze, lrn_alpha, regression$"),
        (run_x + 'freeze = "conv"\n', "run X has freeze = 'conv'; choose one of none, features"),
        ('[A]\nconfig = "A"\ntrain_scale = "256"\n[X]\nconfig = "B"\ntrain_scale = "256"\ninit = "from:A"\nfreeze = "features"\n',
         "run X has freeze = 'features', which fine-tunes a trained net: its init must be a run of configuration B"),
        (run_x + "lrn_alpha = 1e-4\n", "run X sets lrn_alpha, but configuration A has no LRN"),
    ]
    for text, message in catalog_cases:
        runs.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_catalog(runs)
