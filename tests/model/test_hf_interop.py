"""Sutra <-> transformers LlamaForCausalLM: logits agree on random and on real weights."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from sutra.errors import SutraError
from sutra.model.llama import Llama
from sutra.model.config import ModelConfig
from sutra.model.checkpoint import load_model, read_model_config, read_training_record, save_checkpoint, weights_sha256
from sutra.model.export import export_hf

# Full SmolLM2 vocabulary (the tokenizer must fit), everything else small.
RANDOM = ModelConfig(64, 96, 2, 4, 2, max_seq_len=256, rope_theta=100000.0)


def _hf_model(directory):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, attn_implementation="sdpa").eval()
    assert isinstance(model, LlamaForCausalLM)
    return model


@pytest.fixture
def random_checkpoint(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = Llama(RANDOM)
    with torch.no_grad():  # norms away from 1 so a swapped norm would show
        for block in model.blocks:
            block.attn_norm.weight.uniform_(0.5, 1.5)
            block.mlp_norm.weight.uniform_(0.5, 1.5)
    return save_checkpoint(tmp_path / "ckpt", model, tokenizer), model


def test_export_loads_in_transformers_with_equal_logits(random_checkpoint, tmp_path):
    checkpoint, model = random_checkpoint
    out = export_hf(str(checkpoint), str(tmp_path / "hf"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert (out / "tokenizer.json").is_file() and (out / "generation_config.json").is_file()
    hf = _hf_model(out)
    tokens = torch.randint(0, 49152, (2, 40))
    with torch.no_grad():
        assert (hf(tokens).logits - model.eval()(tokens)).abs().max().item() <= 1e-4
    # in bf16 too, where every rounding shows: the same logits, bit for bit
    from transformers import AutoModelForCausalLM

    hf16 = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    with torch.no_grad():
        assert torch.equal(hf16(tokens).logits, load_model(str(checkpoint), dtype=torch.bfloat16).model(tokens))
    # and what it computes is the checkpoint's shape, whatever the export renamed
    from sutra.model.checkpoint import read_model_config

    assert read_model_config(str(out)).shape() == read_model_config(str(checkpoint)).shape()
    # the tokenizer loads by the class name every transformers release has
    from transformers import AutoTokenizer

    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    hf_tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert hf_tokenizer("Hello, world")["input_ids"] == load_model(str(out)).tokenizer.encode("Hello, world")
    # only what a Llama takes (transformers 4 returned token_type_ids too, which its generate refused: the card's snippet failed)
    assert json.loads((out / "tokenizer_config.json").read_text())["model_input_names"] == ["input_ids", "attention_mask"]
    assert set(hf_tokenizer("Hello, world")) == {"input_ids", "attention_mask"}
    # it truncates to the model's context, not the 8192 of the tokenizer asset
    assert hf_tokenizer.model_max_length == RANDOM.max_seq_len
    # the padding id is the tokenizer's, in both configs
    generation = json.loads((out / "generation_config.json").read_text())
    assert config["pad_token_id"] == generation["pad_token_id"] == hf_tokenizer.pad_token_id == 0


def test_export_and_import_replace_only_model_directories(random_checkpoint, tmp_path):
    checkpoint, _ = random_checkpoint
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    with pytest.raises(SutraError, match="exists and is not a model directory"):
        export_hf(str(checkpoint), str(notes))
    assert (notes / "todo.txt").read_text() == "keep me"
    with pytest.raises(SutraError, match="is the model being read"):
        export_hf(str(checkpoint), str(checkpoint))
    export_hf(str(checkpoint), str(tmp_path / "hf"))
    export_hf(str(checkpoint), str(tmp_path / "hf"), dtype="bfloat16")  # a previous export is replaced
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    export_hf(str(tmp_path / "hf"), str(tmp_path / "again"))  # exported from bf16 weights: float32 unless asked
    assert json.loads((tmp_path / "again" / "config.json").read_text())["torch_dtype"] == "float32"

    from sutra_testing import run_sutra

    refused = run_sutra("import", str(tmp_path / "hf"), str(notes))
    assert refused.returncode == 2 and "exists and is not a model directory" in refused.stderr
    assert sorted(p.name for p in notes.iterdir()) == ["todo.txt"] and (notes / "todo.txt").read_text() == "keep me"
    refused = run_sutra("import", str(tmp_path / "hf"), str(tmp_path / "hf"))
    assert refused.returncode == 2 and "is the model being read" in refused.stderr
    run_sutra("import", str(tmp_path / "hf"), str(tmp_path / "imported"), check=True)
    run_sutra("import", str(tmp_path / "again"), str(tmp_path / "imported"), check=True)  # a previous import is replaced
    # nor inside a model directory, nor among a run's checkpoints: training's clean-up removed an export there, unseen
    with pytest.raises(SutraError, match=rf"hf/sub: is inside the model directory {re.escape(str(tmp_path / 'hf'))}, which its next write"):
        export_hf(str(checkpoint), str(tmp_path / "hf" / "sub"))
    store = tmp_path / "run" / "checkpoints"
    (store / "step_00000002").mkdir(parents=True)
    (tmp_path / "run" / "e1-best").symlink_to(store / "step_00000002")
    refused = run_sutra("import", str(tmp_path / "hf"), str(store / "hf-export"))
    assert refused.returncode == 2 and f"is inside {store}, a training run's checkpoints, which the run removes" in refused.stderr
    assert sorted(p.name for p in store.iterdir()) == ["step_00000002"]
    assert load_model(str(tmp_path / "imported")).model.embed.weight.dtype == torch.float32


def test_import_from_transformers_gives_equal_logits(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    hf = LlamaForCausalLM(
        LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256, rope_theta=100000.0, tie_word_embeddings=True)
    ).eval()
    hf.save_pretrained(str(tmp_path / "hf"))
    tokenizer.save(tmp_path / "hf")
    loaded = load_model(str(tmp_path / "hf"))
    assert loaded.kind == "hf"
    tokens = torch.randint(0, 49152, (2, 40))
    with torch.no_grad():
        assert (hf(tokens).logits - loaded.model(tokens)).abs().max().item() <= 1e-4
    # and through a Sutra checkpoint written by `sutra import`
    save_checkpoint(tmp_path / "sutra", loaded.model, loaded.tokenizer)
    with torch.no_grad():
        assert torch.equal(load_model(str(tmp_path / "sutra")).model(tokens), loaded.model(tokens))


def test_hf_directories_read_as_transformers_reads_them(random_checkpoint, tmp_path):
    """Missing config keys take LlamaConfig's defaults, every declared end-of-turn id stops generation,
    and only the model's weight files are read (not an adapter beside them)."""
    checkpoint, model = random_checkpoint
    out = export_hf(str(checkpoint), str(tmp_path / "hf"))
    config = json.loads((out / "config.json").read_text())
    del config["rms_norm_eps"], config["max_position_embeddings"]
    (out / "config.json").write_text(json.dumps(config))
    generation = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": [config["eos_token_id"], 7]}))
    save_file({"model.embed_tokens.weight": torch.zeros(3, 3)}, str(out / "adapter_model.safetensors"))
    # model.safetensors beside a shard index of other weights: transformers loads model.safetensors
    from safetensors.torch import load_file

    halved = {k: v / 2 for k, v in load_file(str(out / "model.safetensors")).items()}
    save_file(halved, str(out / "model-00001-of-00001.safetensors"), metadata={"format": "pt"})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors" for k in halved}}))
    loaded = load_model(str(out))
    hf = _hf_model(out)
    assert (loaded.model.config.rms_norm_eps, loaded.model.config.max_seq_len) == (hf.config.rms_norm_eps, hf.config.max_position_embeddings) == (1e-6, 2048)
    assert loaded.eos_token_ids == [config["eos_token_id"], 7]
    tokens = torch.randint(0, 49152, (1, 24))
    with torch.no_grad():
        assert (hf(tokens).logits - loaded.model(tokens)).abs().max().item() <= 1e-4


def test_a_tokenizer_without_a_bos_exports_with_none_and_one_pad_id(tmp_path):
    """A Llama whose tokenizer declares an EOS but no BOS (and no <|endoftext|>): export stopped with
    "bos_token '<|endoftext|>' is not in the vocabulary", and the two files disagreed on the pad id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate("the a cat dog sat on mat and".split())}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    torch.manual_seed(0)
    source = tmp_path / "hf-nobos"
    LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                                 max_position_embeddings=64, tie_word_embeddings=True, eos_token_id=1, bos_token_id=None, pad_token_id=None)).save_pretrained(source)
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>").save_pretrained(source)
    out = export_hf(str(source), str(tmp_path / "export"))
    config, generation = (json.loads((out / name).read_text()) for name in ("config.json", "generation_config.json"))
    assert config["bos_token_id"] is None and generation["bos_token_id"] is None
    assert config["pad_token_id"] == generation["pad_token_id"] == 1  # no pad declared: the separator, </s>, in both
    tokens = torch.tensor([AutoTokenizer.from_pretrained(str(out))("the cat sat on the mat")["input_ids"]])
    with torch.no_grad():
        assert (_hf_model(out)(tokens).logits - load_model(str(out)).model(tokens)).abs().max().item() <= 1e-5


@pytest.mark.slow
def test_real_smollm2_weights_agree_with_transformers(teacher_dir, tmp_path):
    """SmolLM2-135M-Instruct (dequantized GGUF): next-token logits and greedy text match transformers."""
    from sutra.model.generate import generate

    loaded = load_model("smollm2-135m-instruct")
    hf = _hf_model(teacher_dir)
    prompt = loaded.tokenizer.encode("The capital of France is")
    with torch.no_grad():
        ours = loaded.model(torch.tensor([prompt]))[0, -1]
        theirs = hf(torch.tensor([prompt])).logits[0, -1]
    assert (ours - theirs).abs().max().item() <= 1e-3
    assert int(ours.argmax()) == int(theirs.argmax())
    sutra_ids = generate(loaded.model, prompt, max_new_tokens=8)
    hf_ids = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    assert sutra_ids == hf_ids[: len(sutra_ids)]
    assert "Paris" in loaded.tokenizer.decode(sutra_ids)
    # and an exported copy, loaded by transformers, says the same
    exported = _hf_model(export_hf("smollm2-135m-instruct", str(tmp_path / "export")))
    again = exported.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    assert again == hf_ids
    # its special ids are the release's (pad <|im_end|>, not <|endoftext|>)
    ids = ("bos_token_id", "eos_token_id", "pad_token_id")
    source, written = (json.loads((d / "config.json").read_text()) for d in (teacher_dir, tmp_path / "export"))
    assert {k: written[k] for k in ids} == {k: source[k] for k in ids} == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    assert json.loads((tmp_path / "export" / "generation_config.json").read_text())["pad_token_id"] == 2


def test_special_token_roles_kept_only_in_special_tokens_map_are_read(tmp_path):
    """Older Hugging Face tokenizers keep the roles in special_tokens_map.json; tokenizer_config.json's win where both name one."""
    import shutil

    from sutra.tokenizer import load_tokenizer

    source = load_tokenizer("smollm2-135m-instruct").directory
    directory = tmp_path / "tokenizer"
    shutil.copytree(source, directory)
    config = json.loads((directory / "tokenizer_config.json").read_text())
    for role in ("bos_token", "eos_token", "pad_token"):
        config.pop(role, None)
    config["eos_token"] = None  # as some files write an unset role
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|im_start|>", "eos_token": {"content": "<|im_end|>", "special": True}, "pad_token": "<|im_end|>"}))
    tokenizer = load_tokenizer(directory)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 2)
    config["bos_token"] = "<|endoftext|>"
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(directory).bos_id == 0
    (directory / "special_tokens_map.json").write_text("[]")
    with pytest.raises(SutraError, match=r"special_tokens_map.json: expected a JSON object, found list"):
        load_tokenizer(directory)


def test_corrupt_or_missing_checkpoint_files_are_clear_errors(random_checkpoint):
    checkpoint, _ = random_checkpoint
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SutraError, match="corrupt or truncated"):
        load_model(str(checkpoint))
    weights.unlink()
    with pytest.raises(SutraError, match="missing"):
        load_model(str(checkpoint))
    (checkpoint / "sutra.json").write_text("{oops")
    with pytest.raises(SutraError, match="not valid JSON"):
        load_model(str(checkpoint))
    (checkpoint / "sutra.json").write_text("[1, 2]")
    with pytest.raises(SutraError, match="a JSON list, not an object"):
        load_model(str(checkpoint))
    (checkpoint / "sutra.json").write_text('{"format": "sutra-checkpoint"}')
    for read in (load_model, read_model_config, read_training_record):
        with pytest.raises(SutraError, match="no 'model' section"):
            read(str(checkpoint))


def test_shape_mismatch_and_small_vocab_are_refused(random_checkpoint, tmp_path):
    checkpoint, model = random_checkpoint
    info = json.loads((checkpoint / "sutra.json").read_text())
    info["model"]["num_layers"] = 3
    (checkpoint / "sutra.json").write_text(json.dumps(info))
    with pytest.raises(SutraError, match=r"do not match the config \(Missing key\(s\) in state_dict: \"blocks.2"):
        load_model(str(checkpoint))
    info["model"].update(num_layers=2, vocab_size=1000)
    (checkpoint / "sutra.json").write_text(json.dumps(info))
    save_file({k: v for k, v in model.state_dict().items()}, str(tmp_path / "unused.safetensors"))
    with pytest.raises(SutraError, match="tokenizer has 49152 tokens"):
        load_model(str(checkpoint))


def test_a_checkpoint_without_its_tokenizer_file_takes_only_the_tokenizer_it_was_trained_with(random_checkpoint):
    checkpoint, _ = random_checkpoint
    (checkpoint / "tokenizer.json").unlink()  # an older checkpoint: the tokenizer is named by its source
    assert load_model(str(checkpoint)).tokenizer.vocab_size == 49152
    info = json.loads((checkpoint / "sutra.json").read_text())
    info["tokenizer"]["fingerprint"] = "0123456789abcdef"  # the source has changed since training
    (checkpoint / "sutra.json").write_text(json.dumps(info))
    with pytest.raises(SutraError, match="has changed since .* copy the original tokenizer.json"):
        load_model(str(checkpoint))


def test_weights_that_cannot_be_read_are_not_called_corrupt(random_checkpoint):
    from sutra.model.checkpoint import load_model

    checkpoint, _ = random_checkpoint
    weights = checkpoint / "model.safetensors"
    weights.unlink()
    weights.mkdir()  # a read fails as no permission would (root reads everything)
    with pytest.raises(SutraError, match=r"model\.safetensors: cannot read it \(Is a directory\)$"):
        load_model(str(checkpoint))


def test_a_model_write_never_loses_files_it_does_not_replace(random_checkpoint, tmp_path):
    """A hub clone (.git, .gitattributes, a hand-written README.md) was swapped away whole; a run's
    `last` symlink was replaced by an export, breaking the run's resume."""
    checkpoint, _ = random_checkpoint
    clone = export_hf(str(checkpoint), str(tmp_path / "clone"))
    (clone / ".git").mkdir()
    (clone / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (clone / "README.md").write_text("# my card\n")
    with pytest.raises(SutraError, match=r"holds \.git, \.gitattributes, README\.md, which a model write does not replace"):
        export_hf(str(checkpoint), str(clone))
    assert (clone / ".gitattributes").is_file() and (clone / "README.md").read_text() == "# my card\n"
    (clone / ".git").rmdir()
    (clone / ".gitattributes").unlink()
    with pytest.raises(SutraError, match=r"holds README\.md, .*; or pass --card with the card to publish, which replaces README\.md$"):
        export_hf(str(checkpoint), str(clone))  # (the card an earlier export published, say)
    card = tmp_path / "card.md"
    card.write_text("# the new card\n")
    export_hf(str(checkpoint), str(clone), card=str(card))  # a card given replaces the README.md
    assert (clone / "README.md").read_text() == "# the new card\n"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last").symlink_to(checkpoint)
    with pytest.raises(SutraError, match="is a symlink"):
        export_hf(str(checkpoint), str(tmp_path / "run" / "last"))
    assert (tmp_path / "run" / "last").is_symlink()


def test_hf_configs_that_do_not_describe_the_weights_are_clear_errors(random_checkpoint, tmp_path):
    checkpoint, _ = random_checkpoint
    hf = export_hf(str(checkpoint), str(tmp_path / "hf"))
    config = json.loads((hf / "config.json").read_text())
    for change, message in (
        ({"num_hidden_layers": 1}, r"holds tensors its config.json does not describe \(model.layers.1.input_layernorm.weight"),
        ({"intermediate_size": None}, "config.json lacks 'intermediate_size'"),
        ({"hidden_size": "64"}, "config.json 'hidden_size' must be a positive whole number, got '64'"),
        ({"rms_norm_eps": "tiny"}, "config.json 'rms_norm_eps' must be a number, got 'tiny'"),
        # a 4.x rope_scaling beside a default 5.x rope_parameters was read as no scaling
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e5}, "rope_scaling": {"type": "dynamic", "factor": 2.0}},
         r"RoPE scaling 'dynamic' \(rope_scaling\) is not supported"),
        # with no model_type the architecture names the model: a Mistral was read as a Llama
        ({"model_type": None, "architectures": ["MistralForCausalLM"]}, r"architectures \['MistralForCausalLM'\] is no Llama"),
    ):
        (hf / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(SutraError, match=message):
            load_model(str(hf))
    (hf / "config.json").write_text(json.dumps(config))
    assert load_model(str(hf)).model.config.name == RANDOM.name  # the exported model's name comes back


def test_a_loaded_model_names_the_bytes_of_the_weights_it_read(random_checkpoint, tmp_path):
    """The digest an evaluation records comes from the read that loaded the weights, so a training
    run moving its `last` link afterwards cannot make the results name other weights."""
    checkpoint, model = random_checkpoint
    export_hf(str(checkpoint), str(tmp_path / "hf"))
    for spec in (checkpoint, tmp_path / "hf"):
        assert load_model(str(spec)).weights_sha256 == weights_sha256(str(spec)), spec
    link = tmp_path / "last"
    link.symlink_to(checkpoint)
    loaded = load_model(str(link))
    with torch.no_grad():
        model.norm.weight.add_(1.0)
    other = save_checkpoint(tmp_path / "other", model, loaded.tokenizer)
    link.unlink()
    link.symlink_to(other)  # as a run moves `last` on
    assert loaded.weights_sha256 == weights_sha256(str(checkpoint)) != weights_sha256(str(link))


def test_loading_a_model_leaves_out_the_compiler_and_keeps_torch_init(random_checkpoint):
    """A command that only loads a model must not import torch._dynamo (seconds of its start on a
    slow CPU), and the init functions skipped while the model is built are back afterwards."""
    import subprocess
    import sys

    checkpoint, model = random_checkpoint
    probe = (
        "import sys, torch; from sutra.model.checkpoint import load_model\n"
        f"loaded = load_model({str(checkpoint)!r})\n"
        "print('torch._dynamo' in sys.modules, torch.nn.init.normal_.__module__, torch.nn.init.ones_.__module__)\n"
        "print(float(sum(p.double().sum() for p in loaded.model.parameters())))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    imported, normal_module, ones_module = result.stdout.split("\n")[0].split()
    assert (imported, normal_module, ones_module) == ("False", "torch.nn.init", "torch.nn.init")
    assert float(result.stdout.split("\n")[1]) == pytest.approx(float(sum(p.double().sum() for p in model.parameters())), rel=1e-12)


def test_generate_prompts_with_the_bos_a_llama_style_tokenizer_adds(tmp_path):
    """A tokenizer whose template puts a BOS first (Llama 2/3, TinyLlama): `sutra generate` gives
    the prompt the ids transformers' `tokenizer(text)` gives, so the same greedy text as `model.generate`."""
    import shutil
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from sutra.tokenizer import load_tokenizer

    directory = tmp_path / "bos-tokenizer"
    shutil.copytree(load_tokenizer().directory, directory)
    spec = json.loads((directory / "tokenizer.json").read_text())
    spec["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                              "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1], "tokens": ["<|im_start|>"]}}}
    (directory / "tokenizer.json").write_text(json.dumps(spec))
    tokenizer = load_tokenizer(directory)
    assert tokenizer.encode("Hello world", add_special_tokens=True) == AutoTokenizer.from_pretrained(str(directory))("Hello world")["input_ids"]
    assert tokenizer.encode("Hello world", add_special_tokens=True)[0] == 1 and tokenizer.encode("Hello world")[0] != 1
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "ckpt", Llama(RANDOM), tokenizer)
    hf = _hf_model(export_hf(str(checkpoint), str(tmp_path / "hf")))
    hf_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    inputs = hf_tokenizer("Hello world", return_tensors="pt")
    theirs = hf.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    result = subprocess.run([sys.executable, "-m", "sutra", "generate", str(checkpoint), "--prompt", "Hello world", "--max-new-tokens", "12"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.rstrip("\n") == "Hello world" + hf_tokenizer.decode(theirs)


def test_a_malformed_shard_index_is_one_error_and_never_reaches_outside_the_directory(random_checkpoint, tmp_path):
    """A weight_map that was a list, or named a shard by a number, was a traceback; one naming
    "../../x" was followed outside the model's directory."""
    checkpoint, _ = random_checkpoint
    out = export_hf(str(checkpoint), str(tmp_path / "hf"))
    (out / "model.safetensors").rename(out / "model-00001-of-00001.safetensors")
    index = out / "model.safetensors.index.json"
    for weight_map in ([1], {"a": 5}, {"a": "../../outside.safetensors"}, {"a": "model.bin"}, {}):
        index.write_text(json.dumps({"weight_map": weight_map}))
        with pytest.raises(SutraError, match=rf"^{re.escape(str(index))}: not a shard index \(its weight_map names, for each tensor, "
                                             r"a \.safetensors file beside it\)"):
            load_model(str(out))


def test_a_hand_edited_training_record_is_one_error_naming_its_field(tmp_path, tokenizer):
    """`sutra card` and `sutra eval` met a string step, a list record or a null step as tracebacks,
    and a step of -1 as "step -1 of the run"."""
    checkpoint = save_checkpoint(tmp_path / "ckpt", Llama(ModelConfig(64, 96, 1, 4, 2, max_seq_len=64)), tokenizer,
                                 extra={"training": {"step": 10, "epoch": 1.0, "val_ppl": 50.0, "recipe": "tiny"}})
    info_file = checkpoint / "sutra.json"
    info = json.loads(info_file.read_text())
    assert read_training_record(str(checkpoint))["step"] == 10
    for training, problem in (({**info["training"], "step": "10"}, ".step is '10', not a whole number of steps, 0 or more"),
                              ({**info["training"], "step": -1}, ".step is -1, not a whole number of steps, 0 or more"),
                              ({**info["training"], "step": None}, ".step is None, not a whole number of steps, 0 or more"),
                              ({**info["training"], "epoch": "x"}, ".epoch is 'x', not a number"),
                              ([1], " is a JSON list, not an object")):
        info_file.write_text(json.dumps({**info, "training": training}))
        with pytest.raises(SutraError, match=rf"^{re.escape(str(info_file))}: training{re.escape(problem)}; the checkpoint's record was edited"):
            read_training_record(str(checkpoint))
