// Lint is for what the type checker cannot see: floating promises, misused
// async callbacks, unused code. Formatting is left to the editor.
import js from '@eslint/js'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'eslint.config.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
    },
  },
  // A job transaction's store calls and parts are generators (hub/jobs/tx.ts): one called without
  // `yield*` does nothing at all, so a call that stands alone as a statement is refused.
  {
    files: ['hub/jobs/**/*.ts'],
    rules: {
      'no-restricted-syntax': ['error', {
        selector: "ExpressionStatement > CallExpression[callee.object.name=/^(tx|endings|pace)$/]",
        message: 'a job transaction step does nothing unless run with yield* (hub/jobs/tx.ts)',
      }, {
        selector: "ExpressionStatement > CallExpression[callee.name=/(Step|^takeCancels|^applyOne|^viewOf)$/]",
        message: 'a job transaction step does nothing unless run with yield* (hub/jobs/tx.ts)',
      }],
    },
  },
  // Plain ES modules loaded by agent processes in tests (handler fixtures): linted without types.
  {
    files: ['**/*.mjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly' },
    },
  },
)
