import { defineConfig } from '@playwright/test';

// Debian's Chromium (apt-get install chromium); Playwright downloads no browser.
export default defineConfig({
  testDir: 'tests',
  testMatch: /.*\.spec\.ts$/,
  globalSetup: './tests/global-setup.ts',
  // One stack for the run; the scenarios build on each other's data, so one worker.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 60_000,
  expect: { timeout: 10_000 },
  reporter: process.env.CI ? [['list'], ['junit', { outputFile: 'test-results/junit.xml' }]] : 'list',
  use: {
    browserName: 'chromium',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    },
    viewport: { width: 1280, height: 860 },
    trace: 'off',
    screenshot: 'only-on-failure',
  },
});
