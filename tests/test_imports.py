"""Every module imports, and the CLI works, with the optional heavy libraries absent."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {"ai_edge_litert", "tensorrt", "tensorflow", "torch", "polygraphy", "cupy", "cuda", "flatbuffers"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked for this test")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True)


def test_all_modules_import_without_optional_libraries():
    result = _run(
        """
        import importlib, pkgutil
        import mpcompile, mpcompile_onnxruntime, mpcompile_tflite, mpcompile_tensorrt
        for package in (mpcompile, mpcompile_onnxruntime, mpcompile_tflite, mpcompile_tensorrt):
            for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
                if not info.name.endswith("__main__"):  # that one runs the CLI
                    importlib.import_module(info.name)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_cli_help_and_backends_without_optional_libraries():
    result = _run(
        """
        import sys
        from mpcompile.cli.main import main
        sys.argv = ["mpcompile", "backends", "--json"]
        main()
        """
    )
    assert result.returncode == 0, result.stderr
    assert '"tflite"' in result.stdout and '"available": false' in result.stdout
    help_result = _run(
        """
        import sys
        from mpcompile.cli.main import main
        sys.argv = ["mpcompile", "--help"]
        main()
        """
    )
    assert help_result.returncode == 0 and "compile" in help_result.stdout
