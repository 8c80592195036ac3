import pytest

from vgg.recipe.profiles import PROFILES_FILE, get_profile, load_profiles
from vgg.training.schedule import drop_deadline_epochs


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


BAD_PROFILES = {  # an edit of experiments/profiles.toml: the error it must give
    ("image_scale = \"2/7\"", "image_scale = \"1/3\""): "maps the 224 crop to 75, not a multiple of 32",
    ("drop_deadlines = [0.75, 0.9]", "drop_deadlines = [0.875, 0.75]"): r"drop_deadlines \[0.875, 0.75\] must be increasing fractions",
    ("[ci]", "[ci]\ndrop_not_before = [0.9]\ndrop_deadlines = [0.5]"): r"drop_not_before \[0.9\] must not come after drop_deadlines \[0.5\]",
    ("schedule = \"plateau\" ", "schedule = \"cosine\" "): "schedule must be one of plateau, steps, got 'cosine'",
    ("[ci]", "[ci]\nschedule = \"steps\""): "profile ci: the steps schedule drops the rate at drop_deadlines",
    ("eval_precision = \"fp32\"", "eval_precision = \"fp16\""): "eval_precision must be one of auto, fp32, bf16, got 'fp16'",
    # a length in epochs or in images seen, not both and not neither
    ("train_images = 200000", "max_epochs = 20\ntrain_images = 200000"): r"profile smoke: give one of max_epochs \(epochs\) and train_images \(images seen\)",
    ("finetune_max_epochs = 1\n", ""): r"profile ci: give one of finetune_max_epochs \(epochs\) and finetune_train_images",
    ("plateau_patience = 1\n", ""): "profile ci: the plateau schedule needs plateau_patience",
    # one line naming the file, the profile, the key and what is expected
    ("batch_size = 64", "batch_sise = 64"): r"profiles.toml \[smoke\]: unknown key batch_sise \(did you mean batch_size\?\); known keys: description, ",
    ("val_images = 1000 ", "val_imgs = 1000 "): r"profiles.toml \[smoke\]: unknown key val_imgs \(did you mean val_images\?\)",
    ("[ci]\n", "[ci]\nmax_epoch = 3\n"): r"profiles.toml \[ci\]: unknown key max_epoch \(did you mean max_epochs\?\)",
    ("batch_size = 64", "batch_size = \"sixteen\""): r'profiles.toml \[smoke\]: batch_size = "sixteen" is not a positive integer$',
    ("batch_size = 64", "batch_size = 0"): r"profiles.toml \[smoke\]: batch_size = 0 is not a positive integer$",
    ("image_scale = \"2/7\"", "image_scale = \"1/0\""): r'profiles.toml \[smoke\]: image_scale = "1/0" is not a positive fraction, e.g. "2/7"$',
    ("max_epochs = 74 ", "max_epochs = -1 "): r"profiles.toml \[paper\]: max_epochs = -1 is not an integer of at least 0$",
    ("dropout = 0.0 ", "dropout = true "): r"profiles.toml \[smoke\]: dropout = true is not a number in \[0, 1\)$",
    ("synthetic = { classes = 50,", "synthetic = { clases = 50,"): r"profiles.toml \[smoke\]: synthetic = \{.*\} is not a table of vgg.data.synthetic.SynthSpec's fields",
    ("[ci]\n", "[ci\n"): r"profiles.toml is not valid TOML: ",
}


def test_a_profile_missing_a_required_key_is_one_line_not_a_recursion(tmp_path):
    bad = tmp_path / "profiles.toml"
    bad.write_text(PROFILES_FILE.read_text().replace("width = 8\n", "", 1))
    with pytest.raises(ValueError, match=r"profiles.toml \[smoke\]: missing key width \(a positive integer\)$"):
        load_profiles(bad)


def test_an_unknown_profile_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown profile 'huge'.*paper, smoke, ci"):
        get_profile("huge")


@pytest.mark.parametrize("edit, message", BAD_PROFILES.items(), ids=[new for _, new in BAD_PROFILES])
def test_a_bad_profile_is_a_clear_error(tmp_path, edit, message):
    old, new = edit
    assert old in PROFILES_FILE.read_text()
    bad = tmp_path / "profiles.toml"
    bad.write_text(PROFILES_FILE.read_text().replace(old, new, 1))
    with pytest.raises(ValueError, match=message):
        load_profiles(bad)


def test_a_length_in_images_seen_gives_a_smaller_set_more_epochs():
    smoke, paper = get_profile("smoke"), get_profile("paper")
    assert (smoke.train_images, smoke.finetune_train_images) == (200000, 30000)
    assert smoke.epoch_limit(fine_tune=False, train_set_size=10000) == 20  # the embedded set: 50 classes x 200
    assert smoke.epoch_limit(fine_tune=False, train_set_size=5000) == 40  # half the images, as many steps
    assert smoke.epoch_limit(fine_tune=True, train_set_size=10000) == 3
    assert smoke.epoch_limit(fine_tune=False, train_set_size=10**9) == 1  # never zero
    assert paper.epoch_limit(fine_tune=False, train_set_size=1_281_167) == 74  # the paper's length is in epochs
