import pytest

from vgg.profiles import PROFILES_FILE, get_profile, load_profiles
from vgg.schedule import drop_deadline_epochs


def test_profiles_map_paper_sizes():
    smoke, ci, paper = get_profile("smoke"), get_profile("ci"), get_profile("paper")
    assert [paper.size(s) for s in (224, 256, 384, 512)] == [224, 256, 384, 512]
    assert [smoke.size(s) for s in (224, 256, 384, 512)] == [64, 73, 110, 146]  # x 2/7
    assert ci.crop == 32 and ci.width == 16
    assert (paper.width, paper.batch_size, paper.max_epochs, paper.random_init) == (1, 256, 74, "paper")
    assert paper.init_std == 0.01 and smoke.init_std == pytest.approx(0.01 * 8**0.5)
    assert all(profile.crop % 32 == 0 for profile in load_profiles().values())
    assert paper.eval_precision == "fp32"  # the paper's numbers are fp32; bf16 is a flag
    assert (paper.schedule, paper.plateau_threshold, paper.plateau_min_epochs, paper.finetune_lr) == ("plateau", 0.5, 10, 1e-3)
    assert drop_deadline_epochs(paper.drop_deadlines, paper.max_epochs) == [37, 52, 63]  # 3 drops, the last >= 10 epochs before 74


def test_unknown_profile_and_bad_scale_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown profile 'huge'.*paper, smoke, ci"):
        get_profile("huge")
    bad = tmp_path / "profiles.toml"
    bad.write_text(PROFILES_FILE.read_text().replace('image_scale = "2/7"', 'image_scale = "1/3"'))
    with pytest.raises(ValueError, match="maps the 224 crop to 75, not a multiple of 32"):
        load_profiles(bad)
    bad.write_text(PROFILES_FILE.read_text().replace("drop_deadlines = [0.75, 0.875]", "drop_deadlines = [0.875, 0.75]"))
    with pytest.raises(ValueError, match=r"drop_deadlines \[0.875, 0.75\] must be increasing fractions"):
        load_profiles(bad)
    bad.write_text(PROFILES_FILE.read_text().replace("[ci]", "[ci]\ndrop_not_before = [0.9]\ndrop_deadlines = [0.5]"))
    with pytest.raises(ValueError, match=r"drop_not_before \[0.9\] must not come after drop_deadlines \[0.5\]"):
        load_profiles(bad)
    bad.write_text(PROFILES_FILE.read_text().replace('schedule = "plateau" ', 'schedule = "cosine" '))
    with pytest.raises(ValueError, match="schedule must be one of plateau, steps, got 'cosine'"):
        load_profiles(bad)
    bad.write_text(PROFILES_FILE.read_text().replace("[ci]", '[ci]\nschedule = "steps"'))
    with pytest.raises(ValueError, match="profile ci: the steps schedule drops the rate at drop_deadlines"):
        load_profiles(bad)
    bad.write_text(PROFILES_FILE.read_text().replace('eval_precision = "fp32"', 'eval_precision = "fp16"'))
    with pytest.raises(ValueError, match="eval_precision must be one of fp32, bf16, got 'fp16'"):
        load_profiles(bad)
