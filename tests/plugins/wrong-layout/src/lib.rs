//! Test plugin `wrong-layout`: exports a root module under hubget's `BASE_NAME`
//! (`hubget_plugin`) and interface version (1.0.0) but with a different layout, so that the
//! host's abi_stable layout check refuses it with a (one-line, summarised) layout error.
//!
//! Tests copy `libtest_plugin_wrong_layout.so` into a plugin directory as
//! `libhubget_<something>.so`.

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::RString;
use abi_stable::{StableAbi, declare_root_module_statics, export_root_module};

/// Not hubget's `PluginMod`: other fields, other types.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = WrongModRef)))]
#[sabi(missing_field(panic))]
pub struct WrongMod {
    /// Returns a name (hubget's `info` returns a `PluginInfo`).
    pub info: extern "C" fn() -> RString,
    /// A field hubget's module does not have.
    #[sabi(last_prefix_field)]
    pub extra: extern "C" fn(u32) -> u32,
}

impl RootModule for WrongModRef {
    declare_root_module_statics! {WrongModRef}
    const BASE_NAME: &'static str = "hubget_plugin";
    const NAME: &'static str = "hubget backend plugin";
    // Claims hubget's interface version, so the version check passes and the layout check runs.
    const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
}

extern "C" fn info() -> RString {
    RString::from("wrong-layout")
}

extern "C" fn extra(x: u32) -> u32 {
    x + 1
}

/// The exported root module.
#[export_root_module]
pub fn root_module() -> WrongModRef {
    WrongMod { info, extra }.leak_into_prefix()
}
