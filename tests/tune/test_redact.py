"""What counts as a secret: credentials are masked, ordinary settings and paths are not."""

from tune.redact import MASK, is_secret_key, redact, redact_text


def test_secret_keys_are_whole_words():
    for key in ("HF_TOKEN", "DB_PASSWORD", "WANDB_API_KEY", "aws_secret_access_key", "auth"):
        assert is_secret_key(key), key
    for key in ("PWD", "OLDPWD", "TOKENIZERS_PARALLELISM", "tokens_per_second", "max_length"):
        assert not is_secret_key(key), key


def test_the_working_directory_is_not_masked(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "pw-redact-test-91c2")
    text = f"{tmp_path}/results/x: pw-redact-test-91c2"
    assert redact_text(text) == f"{tmp_path}/results/x: {MASK}"
    assert redact({"api_key": "abc", "path": str(tmp_path)}) == {
        "api_key": MASK,
        "path": str(tmp_path),
    }


def test_keys_in_a_storage_uri_query_are_masked():
    uri = "s3://bucket/p?endpoint_override=minio:9000&access_key=AKIA1&secret_key=s3cr3t&x=1"
    assert redact_text(uri) == (
        f"s3://bucket/p?endpoint_override=minio:9000&access_key={MASK}&secret_key={MASK}&x=1"
    )
