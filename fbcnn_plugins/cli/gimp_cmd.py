"""``fbcnn install-gimp`` and ``fbcnn uninstall-gimp``."""

from __future__ import annotations

import argparse
import sys


def register(commands: argparse._SubParsersAction) -> None:
    for name, run, text in (
        ("install-gimp", run_install, "install the GIMP 3 plug-in (Filters > Enhance > JPEG Artifacts Removal)"),
        ("uninstall-gimp", run_uninstall, "remove the GIMP 3 plug-in"),
    ):
        parser = commands.add_parser(name, help=text, description=text)
        parser.add_argument(
            "--gimp-dir", metavar="DIR",
            help="GIMP profile folder (e.g. ~/.config/GIMP/3.0); default: every GIMP 3 profile found",
        )
        parser.set_defaults(run=run)


def run_install(args: argparse.Namespace) -> int:
    from fbcnn_plugins.gimp.install import InstallError, install_into, target_profiles

    try:
        profiles = target_profiles(args.gimp_dir)
    except InstallError as error:
        print(f"fbcnn install-gimp: {error}", file=sys.stderr)
        return 1
    status = 0
    for profile in profiles:  # one profile that cannot take the plug-in (a Snap GIMP) does not stop the others
        try:
            done = install_into(profile)
        except InstallError as error:
            print(f"fbcnn install-gimp: {error}", file=sys.stderr)
            status = 1
            continue
        print(f"installed {done.folder} (worker: {sys.executable})")
        if done.platform is not None:
            print(f"  {done.platform.kind} GIMP: the plug-in runs under {done.platform.plugin_python}; "
                  f"{done.platform.note}")
    if status == 0:
        print("restart GIMP; the filter is under Filters > Enhance > JPEG Artifacts Removal (FBCNN)")
    return status


def run_uninstall(args: argparse.Namespace) -> int:
    from fbcnn_plugins.gimp.install import InstallError, target_profiles, uninstall_from

    try:
        removed = [folder for profile in target_profiles(args.gimp_dir) if (folder := uninstall_from(profile))]
    except InstallError as error:
        print(f"fbcnn uninstall-gimp: {error}", file=sys.stderr)
        return 1
    for folder in removed:
        print(f"removed {folder}")
    if not removed:
        print("the plug-in was not installed")
    return 0
