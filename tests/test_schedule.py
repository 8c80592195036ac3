from vgg.training.schedule import PlateauSchedule, drop_deadline_epochs, drop_earliest_epochs


def test_lr_drops_tenfold_on_each_plateau_and_stops_after_three():
    schedule = PlateauSchedule(lr=0.01, patience=2)
    accuracies = [10, 20, 20, 20, 25, 25, 25, 24, 23, 30, 30, 30]
    actions = [schedule.step(a) for a in accuracies]
    assert actions == [
        "improved", "improved", "wait", "drop",
        "improved", "wait", "drop",
        "wait", "drop",
        "improved", "wait", "stop",
    ]
    assert schedule.drops == 3 and schedule.finished
    assert abs(schedule.lr - 1e-5) < 1e-12


def test_state_round_trips():
    schedule = PlateauSchedule(lr=0.01, patience=1)
    schedule.step(5)
    schedule.step(4)
    restored = PlateauSchedule(lr=1.0)
    restored.load_state_dict(schedule.state_dict())
    assert restored == schedule and restored.lr == 0.001


def test_the_rate_never_drops_while_the_net_is_near_chance():
    # 50 classes: chance is 2% top-1 accuracy; near_chance 0.3 asks for 2 + 0.3 * 98 = 31.4%
    schedule = PlateauSchedule(lr=0.01, patience=1, chance_accuracy=2.0, near_chance=0.3)
    stalled_near_chance = [2.5, 3.0, 2.9, 2.8, 8.0, 7.0, 20.0, 19.0]
    assert [schedule.step(a) for a in stalled_near_chance] == ["improved", "improved", "hold", "hold", "improved", "hold", "improved", "hold"]
    assert schedule.lr == 0.01 and schedule.drops == 0 and schedule.learned_fraction() < 0.3
    assert schedule.step(35.0) == "improved" and schedule.step(34.0) == "drop"  # 33.7% of the way: a plateau is a plateau
    assert schedule.drops == 1 and abs(schedule.lr - 1e-3) < 1e-15
    # the same curve without the guard drops at the first stall, at 3% accuracy
    unguarded = PlateauSchedule(lr=0.01, patience=1, chance_accuracy=2.0)
    assert [unguarded.step(a) for a in stalled_near_chance[:3]] == ["improved", "improved", "drop"]


def test_gains_within_the_threshold_are_not_improvements():
    schedule = PlateauSchedule(lr=0.01, patience=1, threshold=1.0)
    assert [schedule.step(a) for a in (50.0, 50.9)] == ["improved", "drop"]
    assert schedule.best == 50.0  # 50.9 was noise, not a new best
    assert [schedule.step(a) for a in (51.5, 52.4)] == ["improved", "drop"]


def test_each_rate_runs_its_minimum_epochs_before_it_drops():
    schedule = PlateauSchedule(lr=0.01, patience=1, min_stage_epochs=3)
    assert [schedule.step(a) for a in (40, 39, 38)] == ["improved", "hold", "drop"]
    assert [schedule.step(a) for a in (41, 40, 39)] == ["improved", "hold", "drop"]  # the new stage counts from its own first epoch
    assert schedule.drops == 2


def test_a_net_still_at_chance_is_given_up_and_one_that_learns_is_not():
    stuck = PlateauSchedule(lr=0.01, patience=1, chance_accuracy=2.0, near_chance=0.5, give_up_epochs=4)
    assert [stuck.step(a) for a in (2.0, 3.0, 2.5, 4.0)] == ["improved", "improved", "hold", "give up"]  # 4.0%: 2% of the way
    assert stuck.finished and stuck.gave_up and stuck.drops == 0
    learning = PlateauSchedule(lr=0.01, patience=1, chance_accuracy=2.0, near_chance=0.5, give_up_epochs=4)
    assert [learning.step(a) for a in (2.0, 3.0, 2.5, 8.0, 7.0)] == ["improved", "improved", "hold", "improved", "hold"]  # 8%: 6% of the way
    assert not learning.finished


def test_the_epochs_after_which_the_rate_dropped_are_recorded():
    schedule = PlateauSchedule(lr=0.01, patience=1)
    for accuracy in (10, 20, 20, 30, 30, 30):
        schedule.step(accuracy)
    assert schedule.drop_epochs == [2, 4, 5] and schedule.drops == 3
    restored = PlateauSchedule(lr=1.0)
    restored.load_state_dict(schedule.state_dict())
    assert restored.drop_epochs == [2, 4, 5] and restored.epochs == 6


def test_deadlines_force_the_drops_a_still_improving_net_has_not_made():
    # a net that gains 2 points every epoch never plateaus; deadlines after 3 and 5 epochs end it at lower rates
    schedule = PlateauSchedule(lr=0.01, patience=2, threshold=1.0, deadlines=[3, 5])
    actions = [schedule.step(a) for a in (40, 42, 44, 46, 48, 50, 52)]
    assert actions == ["improved", "improved", "deadline", "improved", "deadline", "improved", "improved"]
    assert schedule.drop_epochs == schedule.deadline_drop_epochs == [2, 4] and abs(schedule.lr - 1e-4) < 1e-15
    # a net whose curve dropped the rate early meets the first deadline already; the second still applies
    early = PlateauSchedule(lr=0.01, patience=1, deadlines=[3, 5])
    assert [early.step(a) for a in (40, 39, 45, 46, 47)] == ["improved", "drop", "improved", "improved", "deadline"]
    assert early.drop_epochs == [1, 4] and early.deadline_drop_epochs == [4]


def test_a_deadline_does_not_drop_the_rate_of_a_net_near_chance():
    schedule = PlateauSchedule(lr=0.01, patience=2, chance_accuracy=2.0, near_chance=0.5, deadlines=[2])
    assert [schedule.step(a) for a in (10.0, 20.0, 30.0)] == ["improved", "improved", "improved"]  # 29% of the way at most
    assert schedule.drops == 0
    assert schedule.step(60.0) == "deadline"  # 59% of the way: the overdue drop happens now


def test_deadline_epochs_come_from_fractions_of_the_limit_and_skip_the_limit_itself():
    assert drop_deadline_epochs((0.75, 0.875), 24) == [18, 21]
    assert drop_deadline_epochs((0.75, 0.875), 4) == [3]  # 3.5 -> 4 epochs: a drop after training would never be used
    assert drop_deadline_epochs((0.75, 0.9), 3) == [2]  # the smoke fine-tunes: 2.25 -> 2 (rounding up, they never dropped)
    assert drop_deadline_epochs((0.5, 0.7, 0.85), 74) == [37, 52, 63]  # the paper profile's, as before
    assert drop_deadline_epochs((0.1,), 3) == []  # 0.3 -> 0: no drop before the first epoch
    assert drop_deadline_epochs((), 74) == []


def test_no_plateau_drop_comes_before_its_earliest_epoch():
    # a stall after 2 epochs would drop the rate; the first drop may come only after 4 epochs, the second at any time
    schedule = PlateauSchedule(lr=0.01, patience=1, earliest=[4, 0])
    assert [schedule.step(a) for a in (40, 40, 40, 45, 45, 50, 50)] == ["improved", "hold", "hold", "improved", "drop", "improved", "drop"]
    assert schedule.drop_epochs == [4, 6]
    assert drop_earliest_epochs((0.58,), 24) == [14] and drop_earliest_epochs((0.58,), 4) == [3]


def test_the_steps_schedule_drops_exactly_at_its_epochs_whatever_the_curve():
    # near chance, on a plateau, still improving: the fixed steps drop after epochs 2 and 4 and never stop early
    schedule = PlateauSchedule(lr=0.01, patience=1, chance_accuracy=2.0, near_chance=0.5, deadlines=[2, 4], mode="steps")
    actions = [schedule.step(a) for a in (3, 3, 3, 3, 50, 50, 50, 50)]
    assert actions == ["improved", "drop", "wait", "drop", "improved", "wait", "wait", "wait"]
    assert schedule.drop_epochs == [1, 3] and not schedule.finished and abs(schedule.lr - 1e-4) < 1e-15
