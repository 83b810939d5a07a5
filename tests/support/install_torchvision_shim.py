"""Install :mod:`torchvision_cpu_shim` into the running interpreter's site-packages (``make install``)."""

import shutil
import sysconfig
from pathlib import Path

site = Path(sysconfig.get_paths()["purelib"])
shutil.copy(Path(__file__).with_name("torchvision_cpu_shim.py"), site / "torchvision_cpu_shim.py")
(site / "torchvision_cpu_shim.pth").write_text("import torchvision_cpu_shim\n")
print(f"installed torchvision_cpu_shim into {site}")
