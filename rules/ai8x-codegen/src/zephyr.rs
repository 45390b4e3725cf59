//! The Zephyr module skeleton around the generated driver: the module
//! root holds `cnn_model.c`; `zephyr/module.yml` points Zephyr's build at
//! the root's `CMakeLists.txt` and `Kconfig`.

const MODULE_YML: &str = "\
# Zephyr module of a kflow-generated CNN accelerator model.
name: kflow-cnn-model
build:
  cmake: .
  kconfig: Kconfig
";

const CMAKE_LISTS: &str = "\
# Builds the kflow-generated CNN accelerator driver.
if(CONFIG_KFLOW_CNN_MODEL)
  zephyr_library()
  zephyr_library_sources(cnn_model.c)
  zephyr_include_directories(.)
  # KZR's own cnn_start() enables all four quadrants (spec §6.6).
  zephyr_library_compile_definitions(CNN_INIT_ALL_QUADRANTS)
  if(CONFIG_KFLOW_CNN_MODEL_EMBED_WEIGHTS)
    zephyr_library_compile_definitions(CNN_MODEL_EMBED_WEIGHTS)
  endif()
endif()
";

const KCONFIG: &str = "\
config KFLOW_CNN_MODEL
\tbool \"kflow-generated CNN accelerator model\"
\thelp
\t  Compiles cnn_model.c, the driver kflow generated for one network on
\t  the MAX78000/MAX78002 CNN accelerator. Its weights and biases come
\t  from the cnn_model.bin stream (cnn_load_model), e.g. through
\t  CONFIG_KENNING_MODEL_PATH of the Kenning Zephyr runtime.

config KFLOW_CNN_MODEL_EMBED_WEIGHTS
\tbool \"Compile the kernels into the image\"
\tdepends on KFLOW_CNN_MODEL
\thelp
\t  Adds cnn_load_weights(), which loads the kernels from
\t  cnn_model_weights.h instead of a cnn_model.bin stream.
";

/// `(path, contents)` of the module files.
pub fn module_files() -> [(&'static str, &'static str); 3] {
    [
        ("zephyr/module.yml", MODULE_YML),
        ("CMakeLists.txt", CMAKE_LISTS),
        ("Kconfig", KCONFIG),
    ]
}
