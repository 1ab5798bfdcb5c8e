"""Where ultralytics works: scratch folders for training/validation and its settings folder."""

from pathlib import Path

import dagster as dg


class YoloWorkspace(dg.ConfigurableResource):
    scratch_dir: str
    ultralytics_config_dir: str

    def workdir(self, *parts: str) -> Path:
        path = Path(self.scratch_dir).joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Before any step that uses ultralytics runs: ultralytics fixes its settings folder when it is
        first imported, so YOLO_CONFIG_DIR must be set before then (not inside the asset, after
        model checks that already import it)."""
        from yolo_assets.detector import configure_ultralytics

        configure_ultralytics(Path(self.ultralytics_config_dir))
