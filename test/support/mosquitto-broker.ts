import { HAVE_DYNSEC } from '../../bench/mosquitto-dynsec.js'

export { startDynsecBroker, type DynsecBroker } from '../../bench/mosquitto-dynsec.js'

/**
 * The external-broker tests (issue #18) run a private Mosquitto with its
 * dynamic-security plugin. CI installs it (.ci/run), and there a missing one
 * is a failure; on a developer's machine without it those tests are skipped
 * with this reason.
 */
export const SKIP_WITHOUT_DYNSEC = !HAVE_DYNSEC && process.env.CI !== 'true'
if (SKIP_WITHOUT_DYNSEC) {
  process.stderr.write('mosquitto, mosquitto_ctrl or the dynamic-security plugin not found: the external-broker tests are skipped (install them: apt-get install mosquitto mosquitto-clients)\n')
}
