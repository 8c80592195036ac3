from vgg.schedule import PlateauSchedule


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
