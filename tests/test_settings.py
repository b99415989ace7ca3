"""Settings per layer: kernel/runtime, tuner, flows (xlstm_kernels/settings.py, tuner/settings.py, flows/settings.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import CHUNK_T1, make_inputs, settings_env
from profile_fixtures import entry, home, make_profile  # noqa: F401 - fixture

import xlstm_kernels as xk
from flows.settings import FlowSettings, get_flow_settings, reset_flow_settings
from tuner.settings import TunerSettings, get_tuner_settings, reset_tuner_settings
from xlstm_kernels import api
from xlstm_kernels.kernels import fastpath

DOCS = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
LAYERS = {"kernel": xk.Settings, "tuner": TunerSettings, "flows": FlowSettings}
# one env name of each layer, and what it reads as
ENV = {"COMPILE_TIMEOUT_S": ("kernel", "compile_timeout_s", 7.5), "TUNE_N_TRIALS": ("tuner", "tune_n_trials", 3),
       "SERVE_CRON": ("flows", "serve_cron", "5 4 * * *")}


def _own_fields(layer: str) -> set[str]:
    """The fields a layer's class adds to the class below it."""
    cls = LAYERS[layer]
    below = cls.__mro__[1]
    return set(cls.model_fields) - set(getattr(below, "model_fields", {}))


def _getters():
    return {"kernel": xk.get_settings, "tuner": get_tuner_settings, "flows": get_flow_settings}


def test_env_names_of_every_layer_still_take_effect(monkeypatch):
    with settings_env(monkeypatch, {name: str(value) for name, (_, _, value) in ENV.items()}):
        for name, (layer, field, value) in ENV.items():
            for upper in list(LAYERS)[list(LAYERS).index(layer):]:  # the layer and those above it see it
                assert getattr(_getters()[upper](), field) == value, (name, upper)
            assert field in _own_fields(layer)


def test_dotenv_file_is_read_by_every_layer(tmp_path, monkeypatch):
    for name in ENV:
        monkeypatch.delenv(f"XLSTM_AUTOTUNE_{name}", raising=False)
    (tmp_path / ".env").write_text("".join(f"XLSTM_AUTOTUNE_{n}={v}\n" for n, (_, _, v) in ENV.items()))
    monkeypatch.chdir(tmp_path)
    with settings_env(monkeypatch, {}):
        for _, (layer, field, value) in ENV.items():
            assert getattr(_getters()[layer](), field) == value


def test_a_field_of_another_layer_is_refused_not_dropped():
    with pytest.raises(xk.UnknownSetting, match="tune_n_trials.*tuner.TunerSettings"):
        xk.Settings(tune_n_trials=3)
    with pytest.raises(xk.UnknownSetting, match="serve_cron"):
        TunerSettings(serve_cron="* * * * *")
    assert FlowSettings(serve_cron="1 2 * * *", tune_n_trials=2, compile_timeout_s=9.0).tune_n_trials == 2


def test_tuner_functions_take_kernel_settings_too():
    """A kernel-layer xk.Settings given to a tuner function runs with its fields and the tuner's own
    defaults (it used to fail deep inside with an AttributeError); anything else is a clear TypeError."""
    import tuner

    kernel = xk.Settings(metal_buffer_limit=17)
    resolved = tuner.resolve_tuner_settings(kernel)
    assert isinstance(resolved, TunerSettings) and resolved.metal_buffer_limit == 17
    assert resolved.tune_n_trials == TunerSettings().tune_n_trials
    assert tuner.resolve_tuner_settings(None) is get_tuner_settings()
    assert [str(w) for w in tuner.check_workloads(["1,2,64,16,16,float32"], "cpu", settings=kernel)] == [
        "1,2,64,16,16,float32,prefill"]
    with pytest.raises(TypeError, match="settings must be a tuner.TunerSettings, an xlstm_kernels.Settings or "
                       "None, got dict"):
        tuner.check_workloads(["1,2,64,16,16,float32"], "cpu", settings={"tune_n_trials": 2})


def test_kernel_settings_hold_no_tuner_or_flow_field():
    """What the kernel layer holds (and storage reads): home, paths, device, compile/probe bounds, limits."""
    kernel = set(xk.Settings.model_fields)
    assert not {f for f in kernel if f.startswith(("tune_", "tol_", "fleet", "serve_", "optuna", "busy_"))}
    assert not kernel & {"workloads", "prefect_port", "lock_wait_s", "retune_slowdown", "validate_max_s"}
    assert {"home", "db_path", "db_busy_timeout_s", "device", "profile_path"} <= kernel


def test_upper_resets_keep_the_runtimes_profile_and_fast_path(home, monkeypatch):  # noqa: F811 - fixture
    """Resetting the tuner's or the flows' settings re-reads only them; resetting the kernel's re-reads all."""
    shape, rec = "2,4,37,16,32,float32,prefill", xk.KernelConfig("recurrent", chunk_size=16, heads_per_band=2, t_inner=4)
    q, k, v, _, _ = make_inputs(B=2, NH=4, S=37, DHQK=16, DHV=32)
    xk.publish_profile(make_profile([entry(shape, rec)]))
    assert xk.explain_config(q, k, v).config == rec  # profile loaded
    monkeypatch.setattr(fastpath, "_MEMO", {})
    seen = []
    check = api.check_sequence_inputs
    monkeypatch.setattr(api, "check_sequence_inputs", lambda *a: seen.append(a) or check(*a))
    x = make_inputs(B=2, NH=4, S=8, DHQK=16, DHV=32)  # one chunk of CHUNK_T1: served whole, remembered
    xk.mlstm(*x, config=CHUNK_T1)
    xk.mlstm(*x, config=CHUNK_T1)
    assert len(seen) == 1  # the repeat took the fast path

    other = xk.KernelConfig("chunkwise", chunk_size=8, t_inner=1)
    xk.publish_profile(make_profile([entry(shape, other)]))
    kernel, tuner_s, flow_s = xk.get_settings(), get_tuner_settings(), get_flow_settings()
    monkeypatch.setenv("XLSTM_AUTOTUNE_TUNE_N_TRIALS", "5")
    monkeypatch.setenv("XLSTM_AUTOTUNE_SERVE_CRON", "7 7 * * *")
    reset_tuner_settings()
    reset_flow_settings()
    assert get_tuner_settings().tune_n_trials == 5 and get_flow_settings().serve_cron == "7 7 * * *"  # re-read
    assert xk.get_settings() is kernel
    assert xk.explain_config(q, k, v).config == rec  # the loaded profile stayed
    xk.mlstm(*x, config=CHUNK_T1)
    assert len(seen) == 1  # the fast-path memo stayed

    flow_again = get_flow_settings()
    reset_tuner_settings()  # a tuner reset makes the flows layer (built on it) read afresh too
    assert get_flow_settings() is not flow_again and xk.get_settings() is kernel

    xk.reset_settings()  # the kernel's reset: as before, everything is read afresh
    assert xk.explain_config(q, k, v).config == other
    xk.mlstm(*x, config=CHUNK_T1)
    assert len(seen) == 2
    assert get_tuner_settings() is not tuner_s and get_flow_settings() is not flow_s


def _sections() -> dict[str, str]:
    """docs/settings.md's text per layer section (``## Kernel ...``, ``## Tuner ...``, ``## Flows ...``)."""
    parts = re.split(r"^## ", DOCS.read_text(), flags=re.M)
    out = {}
    for part in parts[1:]:
        title = part.split("\n", 1)[0].lower()
        for layer in LAYERS:
            if title.startswith(layer):
                out[layer] = part
    return out


def test_docs_list_every_field_in_its_layer():
    sections = _sections()
    assert set(sections) == set(LAYERS)
    for layer in LAYERS:
        for field in _own_fields(layer):
            name = f"`{field.upper()}`"
            assert name in sections[layer], f"docs/settings.md: {name} missing from the {layer} section"
            assert all(name not in sections[o] for o in LAYERS if o != layer), f"{name} listed outside {layer}"
