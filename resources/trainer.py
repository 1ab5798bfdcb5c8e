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

    def prepare(self) -> None:
        from yolo_assets.detector import configure_ultralytics

        configure_ultralytics(Path(self.ultralytics_config_dir))
