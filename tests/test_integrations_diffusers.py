"""DiffsolveScheduler inside diffusers pipelines, against ``diffsolve.sample`` on the same network.

Tiny randomly initialised networks built from configs (nothing is downloaded).  The pipeline's
loop and ``diffsolve.sample(diffsolve.load(unet, scheduler=config), ...)`` start from the same
state (``y_start = x_T / alpha_0``) and must give the same samples: the scheduler feeds the
network exactly the inputs the driver feeds it, so the differences measured are 0 (the bar is
float32 rounding, 1e-5 relative to the samples' scale).
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import diffsolve  # noqa: E402
from diffsolve import NFEError  # noqa: E402
from diffsolve.integrations.diffusers import DiffsolveScheduler  # noqa: E402

F64 = torch.float64
torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning",
                                        "ignore::diffsolve.StabilityWarning")


def _tol(ref: torch.Tensor) -> float:
    return 1e-5 * max(1.0, float(ref.abs().max()))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, norm_num_groups=4,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval().requires_grad_(False)


def _noise(seed: int = 1, batch: int = 2) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor((batch, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _reference(unet, config, sch, x, solver, nfe, seeds=None, **kw):
    """diffsolve.sample from the pipeline's starting state x (at the first level)."""
    den = diffsolve.load(unet, scheduler=config)
    y0 = sch.canonical_start(x)
    return diffsolve.sample(den, x.to(F64), solver=solver, schedule=sch.schedule_name, nfe=nfe, y_start=y0,
                            seeds=seeds, **kw)


def _drive(sch, unet, x, n, generator=None):
    """The loop every diffusers pipeline runs."""
    sch.set_timesteps(n)
    with torch.no_grad():
        for t in sch.timesteps:
            x = sch.step(unet(sch.scale_model_input(x, t), t).sample, t, x, generator=generator).prev_sample
    return x


CASES = [  # solver, schedule, nfe, seeds: multistep, two-evaluation, stochastic
    ("dpm++2m", "karras", 6, None),
    ("unipc-bh2", "log-snr", 5, None),
    ("heun", "karras", 7, None),
    ("dpm++2s", "log-snr", 5, None),
    ("sde-dpm++2m", "karras", 5, [11, 3]),
    ("edm-churn", "karras", 5, [7, 8]),
]


@pytest.mark.parametrize("solver,schedule,nfe,seeds", CASES)
def test_ddpm_pipeline_matches_sample(unet, solver, schedule, nfe, seeds):
    base = diffusers.DDPMScheduler().config
    opts = {"solver_options": {"S_churn": 10.0}} if solver == "edm-churn" else {}
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = sch = DiffsolveScheduler.from_config(base, solver=solver, schedule=schedule, seeds=seeds, **opts)
    img = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=nfe,
               output_type="pt").images
    assert len(sch.timesteps) == nfe and sch.step_index == nfe
    ref = _reference(unet, base, sch, _noise(), solver, nfe, seeds, **opts.get("solver_options", {}))
    assert ref.nfe == nfe
    want = (ref.samples / 2 + 0.5).clamp(0, 1)
    assert (img.to(F64) - want).abs().max() <= 1e-6
    raw = _drive(DiffsolveScheduler.from_config(base, solver=solver, schedule=schedule, seeds=seeds, **opts),
                 unet, _noise(), nfe)  # unclamped samples
    assert raw.dtype == torch.float32
    assert (raw.to(F64) - ref.samples).abs().max() <= _tol(ref.samples)


def test_two_evaluation_timesteps_repeat_levels(unet):
    sch = DiffsolveScheduler(solver="heun", schedule="karras")
    sch.set_timesteps(5)  # 3 steps: 2 + 2 + 1 evaluations, each step's second one at the next level
    t = sch.timesteps.tolist()
    assert t[1] == t[2] and t[3] == t[4] == 0.0 and t[0] == 999.0
    assert sch.order == 1 and len(sch) == 1000


def test_ddim_pipeline_and_default_schedule(unet):
    base = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   prediction_type="v_prediction", timestep_spacing="trailing").config
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler.from_config(base))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = sch = DiffsolveScheduler.from_config(base, solver="dpm++2m")
    assert sch.schedule_name == "time-trailing"  # the config's timestep_spacing
    img = pipe(batch_size=2, generator=torch.Generator().manual_seed(1), num_inference_steps=6,
               output_type="pt").images
    ref = _reference(unet, base, sch, _noise(), "dpm++2m", 6)
    assert (img.to(F64) - (ref.samples / 2 + 0.5).clamp(0, 1)).abs().max() <= 1e-6
    raw = _drive(DiffsolveScheduler.from_config(base, solver="dpm++2m"), unet, _noise(), 6)
    assert (raw.to(F64) - ref.samples).abs().max() <= _tol(ref.samples)


def test_stochastic_seeds_from_generator(unet):
    base = diffusers.DDPMScheduler().config
    runs = []
    for seed in (5, 5, 6):
        sch = DiffsolveScheduler.from_config(base, solver="sde-dpm++2m", schedule="karras")
        runs.append(_drive(sch, unet, _noise(), 4, generator=torch.Generator().manual_seed(seed)))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_config_round_trip(tmp_path):
    base = diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample").config
    sch = DiffsolveScheduler.from_config(base, solver="unipc-bh2", schedule="karras", rho=5.0,
                                         solver_options={"order": 3}, seeds=[1, 2])
    sch.save_config(tmp_path)
    again = DiffsolveScheduler.from_pretrained(tmp_path)
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(again.config) == public(sch.config)
    assert again.config["_class_name"] == "DiffsolveScheduler"
    twice = DiffsolveScheduler.from_config(sch.config)
    for s in (sch, again, twice):
        s.set_timesteps(7)
    assert torch.equal(sch.timesteps, again.timesteps) and torch.equal(sch.timesteps, twice.timesteps)
    assert again.config.beta_schedule == "squaredcos_cap_v2" and again.config.prediction_type == "sample"


def test_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"unknown solver 'nope'; accepted: .*dpm\+\+2m"):
        DiffsolveScheduler(solver="nope")
    with pytest.raises(ValueError, match=r"unknown schedule 'karas'; accepted: karras"):
        DiffsolveScheduler(schedule="karas")
    with pytest.raises(TypeError, match=r"takes no option\(s\) eta"):
        DiffsolveScheduler(solver="dpm++2m", solver_options={"eta": 1.0})
    with pytest.raises(ValueError, match="adaptive"):
        DiffsolveScheduler(solver="dpm-solver-12")
    with pytest.raises(ValueError, match="prediction_type"):
        DiffsolveScheduler(prediction_type="score")
    with pytest.raises(ValueError, match="dynamic"):
        DiffsolveScheduler(use_dynamic_shifting=True)
    sch = DiffsolveScheduler(solver="heun")
    with pytest.raises(NFEError, match="nearest budgets it can honour: 3 or 5"):
        sch.set_timesteps(4)
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        DiffsolveScheduler().step(x, 999, x)
    sch.set_timesteps(3)
    with pytest.raises(ValueError, match="planned at 999"):
        sch.step(x, 500, x)


def test_integer_timesteps_are_accepted_with_a_warning(unet):
    sch = DiffsolveScheduler(solver="dpm++2m", schedule="karras")
    sch.set_timesteps(4)
    x = _noise()
    with pytest.warns(UserWarning, match="integer timestep"), torch.no_grad():
        for t in sch.timesteps:
            ti = t.long()  # a pipeline that forces integer timesteps
            x = sch.step(unet(x, ti).sample, ti, x).prev_sample
    assert torch.isfinite(x).all()


def test_flow_matching_config(unet):
    base = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0).config
    sch = DiffsolveScheduler.from_config(base, solver="dpm++2m")
    assert sch.config.flow_matching and sch.schedule_name == "flow-shift"
    got = _drive(sch, unet, _noise(), 5)

    def velocity(x, t):  # the network takes t * num_train_timesteps, as diffusers' flow pipelines pass it
        return unet(x.float(), t.float() * 1000).sample

    den = diffsolve.from_network(velocity, sch.path, "velocity")
    x = _noise()
    ref = diffsolve.sample(den, x.to(F64), solver="dpm++2m", schedule="flow-shift", shift=3.0, nfe=5,
                           y_start=sch.canonical_start(x))
    assert (got.to(F64) - ref.samples).abs().max() <= _tol(ref.samples)


def test_stable_diffusion_pipeline_with_cfg():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")).eval().requires_grad_(False)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,),
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                                  norm_num_groups=4, sample_size=8).eval().requires_grad_(False)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=8)).eval().requires_grad_(False)
    sd_config = diffusers.PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        steps_offset=1, skip_prk_steps=True).config
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet,
                                             scheduler=diffusers.PNDMScheduler.from_config(sd_config),
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = sch = DiffsolveScheduler.from_config(sd_config, solver="unipc-bh2", schedule="karras")
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        emb = text(ids)[0]
    pos, neg, g = emb[:1], emb[1:], 5.0
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    kw = dict(prompt_embeds=pos, negative_prompt_embeds=neg, guidance_scale=g, num_inference_steps=5,
              height=8, width=8, latents=noise.clone())
    latents = pipe(output_type="latent", **kw).images
    image = pipe(output_type="pt", **kw).images
    assert image.shape == (1, 3, 8, 8) and torch.isfinite(image).all()

    def guided_eps(x, t):  # what the pipeline computes: CFG on [negative, positive]
        out = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([neg, pos])).sample
        u, c = out.chunk(2)
        return u + g * (c - u)

    den = diffsolve.from_network(guided_eps, sch.path, "eps", net_dtype=torch.float32)
    x = noise * sch.init_noise_sigma  # what the pipeline scales its latents by
    with torch.no_grad():
        ref = diffsolve.sample(den, x.to(F64), solver="unipc-bh2", schedule="karras", nfe=5,
                               y_start=sch.canonical_start(x))
    assert (latents.to(F64) - ref.samples).abs().max() <= _tol(ref.samples)


def test_docs_example_runs():
    import pathlib
    import re

    text = (pathlib.Path(__file__).parent.parent / "docs" / "diffusers.md").read_text()
    section = text.split("## Use diffsolve from diffusers", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/diffusers.md", "exec"), {})
