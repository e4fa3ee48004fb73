<#
.SYNOPSIS
    Copies export files (for example from 1C) into a Synkro integration's inbox, atomically and
    with a SHA-256 manifest.

.DESCRIPTION
    Run by Task Scheduler after an export. For each file matched by -Path:

      1. waits until the file has not changed for -StableSeconds (the exporter may still write);
      2. computes its SHA-256;
      3. copies it to "<Destination>\<name>.tmp" and checks the copy's SHA-256;
      4. writes the manifest "<name>.sha256" (via "<name>.sha256.tmp" and a rename): the hash in
         sha256sum format, then "# exported_at: <the source file's write time, UTC>";
      5. renames "<name>.tmp" to "<name>".

    Synkro never reads *.tmp files and ignores *.sha256 files on their own, so it only ever sees
    a complete data file, and its manifest is already there when it does. A name that already
    exists in the inbox is never overwritten: a timestamp is added to the new file's name.
    Each file is retried -RetryCount times with a doubling delay on transient errors (share not
    reachable, file locked, copy corrupted). Every step is logged to -LogPath.

    Works with Windows PowerShell 5.1 and PowerShell 7.

    Exit codes (shown by Task Scheduler as "Last Run Result"):
      0  every file was delivered
      1  unexpected error (see the log)
      2  no file matched -Path (the export did not produce a file)
      3  the destination folder could not be reached after all retries
      4  one or more files could not be delivered after all retries (others may have been)

.PARAMETER Path
    The export file(s) to send: paths or wildcards, e.g. "C:\Exports\sales_*.csv". Several
    values may be given.

.PARAMETER Destination
    The integration's inbox folder, usually a share: "\\synkro-host\inbox\<integration id>".

.PARAMETER LogPath
    Log file to append to. Default: "%ProgramData%\Synkro\logs\Send-SynkroExport.log" (on
    other systems: the temp folder).

.PARAMETER RetryCount
    Attempts per file before giving up (default 5).

.PARAMETER RetryDelaySeconds
    Wait before the second attempt; doubled after each failure, at most 300 seconds (default 5).

.PARAMETER StableSeconds
    A source file must be unchanged for this many seconds before it is sent (default 5; 0 sends
    at once).

.PARAMETER AppendTimestamp
    Always add "_yyyyMMdd-HHmmss" to the file name in the inbox (for exports that reuse one file
    name). Without it a timestamp is added only when the name is already taken in the inbox.

.PARAMETER NoManifest
    Do not write the "<name>.sha256" manifest (not recommended: the manifest lets Synkro detect
    a damaged upload).

.PARAMETER ArchivePath
    Move each delivered source file into this folder (created if missing). Default: leave the
    source files where they are.

.EXAMPLE
    powershell.exe -NoProfile -ExecutionPolicy Bypass -File Send-SynkroExport.ps1 `
        -Path "C:\Exports\sales_*.csv" -Destination "\\synkro\inbox\acme-1c"

.EXAMPLE
    pwsh -File ./Send-SynkroExport.ps1 -Path ./out/nomenclature.csv -Destination /mnt/inbox/acme-1c `
        -AppendTimestamp -ArchivePath ./sent
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [string[]] $Path,

    [Parameter(Mandatory = $true)]
    [string] $Destination,

    [string] $LogPath = "",

    [ValidateRange(1, 100)]
    [int] $RetryCount = 5,

    [ValidateRange(0, 3600)]
    [int] $RetryDelaySeconds = 5,

    [ValidateRange(0, 3600)]
    [int] $StableSeconds = 5,

    [switch] $AppendTimestamp,

    [switch] $NoManifest,

    [string] $ArchivePath = ""
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$ExitOk = 0
$ExitUnexpected = 1
$ExitNoFiles = 2
$ExitDestinationUnreachable = 3
$ExitDeliveryFailed = 4
$MaxDelaySeconds = 300

if (-not $LogPath) {
    if ($env:ProgramData) {
        $LogPath = Join-Path $env:ProgramData 'Synkro\logs\Send-SynkroExport.log'
    }
    else {
        $LogPath = Join-Path ([System.IO.Path]::GetTempPath()) 'Send-SynkroExport.log'
    }
}

# UTF-8 without a byte-order mark, the same on 5.1 and 7 (Set-Content differs between them).
$Utf8NoBom = New-Object System.Text.UTF8Encoding -ArgumentList $false

function Write-Log {
    param([string] $Level, [string] $Message)
    $line = '{0} [{1}] {2}' -f (Get-Date -Format 'yyyy-MM-dd HH:mm:ss'), $Level, $Message
    Write-Host $line
    try {
        $folder = Split-Path -Parent $LogPath
        if ($folder -and -not (Test-Path -LiteralPath $folder)) {
            New-Item -ItemType Directory -Path $folder -Force | Out-Null
        }
        [System.IO.File]::AppendAllText($LogPath, $line + [Environment]::NewLine, $Utf8NoBom)
    }
    catch {
        # A log that cannot be written must not stop the delivery itself.
        Write-Warning "cannot write the log file ${LogPath}: $($_.Exception.Message)"
    }
}

function Get-Sha256 {
    param([string] $File)
    return (Get-FileHash -LiteralPath $File -Algorithm SHA256).Hash.ToLowerInvariant()
}

function Wait-Stable {
    # The exporter may still be writing: wait until size and write time stop changing.
    param([string] $File)
    if ($StableSeconds -le 0) { return }
    $deadline = (Get-Date).AddSeconds([Math]::Max(60, $StableSeconds * 10))
    while ($true) {
        $before = Get-Item -LiteralPath $File
        Start-Sleep -Seconds $StableSeconds
        $after = Get-Item -LiteralPath $File
        if ($before.Length -eq $after.Length -and $before.LastWriteTimeUtc -eq $after.LastWriteTimeUtc) {
            return
        }
        if ((Get-Date) -gt $deadline) {
            throw "the file is still changing after waiting; is the export still running?"
        }
        Write-Log 'INFO' "$($after.Name) is still being written; waiting"
    }
}

function Get-FreeName {
    # A name not taken in the inbox (nor by an upload in progress), so nothing is overwritten.
    param([string] $Name)
    $stem = [System.IO.Path]::GetFileNameWithoutExtension($Name)
    $extension = [System.IO.Path]::GetExtension($Name)
    $candidate = $Name
    if ($AppendTimestamp) {
        $candidate = '{0}_{1}{2}' -f $stem, (Get-Date -Format 'yyyyMMdd-HHmmss'), $extension
    }
    $n = 0
    while ((Test-Path -LiteralPath (Join-Path $Destination $candidate)) -or
        (Test-Path -LiteralPath (Join-Path $Destination ($candidate + '.tmp')))) {
        $n += 1
        $candidate = '{0}_{1}_{2}{3}' -f $stem, (Get-Date -Format 'yyyyMMdd-HHmmss'), $n, $extension
    }
    return $candidate
}

function Remove-IfExists {
    param([string] $File)
    if (Test-Path -LiteralPath $File) {
        Remove-Item -LiteralPath $File -Force -ErrorAction SilentlyContinue
    }
}

function Send-OneFile {
    param([System.IO.FileInfo] $Source)
    Wait-Stable -File $Source.FullName
    $hash = Get-Sha256 -File $Source.FullName
    $name = Get-FreeName -Name $Source.Name
    $final = Join-Path $Destination $name
    $tmp = $final + '.tmp'
    $manifest = $final + '.sha256'
    $manifestTmp = $manifest + '.tmp'
    try {
        Copy-Item -LiteralPath $Source.FullName -Destination $tmp -Force
        $copied = Get-Sha256 -File $tmp
        if ($copied -ne $hash) {
            throw "the copy's SHA-256 $copied differs from the source's $hash (damaged transfer)"
        }
        if (-not $NoManifest) {
            # The manifest is in place before the data file appears under its final name. Its
            # exported_at (the write time of the export) orders the files of one run in Synkro.
            $exportedAt = '{0:s}Z' -f $Source.LastWriteTimeUtc
            $manifestText = "$hash  $name`n" + '# exported_at: ' + "$exportedAt`n"
            [System.IO.File]::WriteAllText($manifestTmp, $manifestText, $Utf8NoBom)
            Move-Item -LiteralPath $manifestTmp -Destination $manifest -Force
        }
        Move-Item -LiteralPath $tmp -Destination $final
    }
    catch {
        Remove-IfExists -File $tmp
        Remove-IfExists -File $manifestTmp
        if (-not (Test-Path -LiteralPath $final)) { Remove-IfExists -File $manifest }
        throw
    }
    Write-Log 'INFO' "sent $($Source.FullName) -> $final ($($Source.Length) bytes, sha256 $hash)"
    if ($ArchivePath) {
        if (-not (Test-Path -LiteralPath $ArchivePath)) {
            New-Item -ItemType Directory -Path $ArchivePath -Force | Out-Null
        }
        $archived = Join-Path $ArchivePath ('{0}_{1}' -f (Get-Date -Format 'yyyyMMdd-HHmmss'), $Source.Name)
        Move-Item -LiteralPath $Source.FullName -Destination $archived
        Write-Log 'INFO' "archived $($Source.FullName) -> $archived"
    }
}

function Invoke-WithRetry {
    # Runs $Action up to $RetryCount times, doubling the delay after each failure.
    param([scriptblock] $Action, [string] $What)
    $delay = $RetryDelaySeconds
    for ($attempt = 1; $attempt -le $RetryCount; $attempt++) {
        try {
            & $Action | Out-Null
            return $true
        }
        catch {
            Write-Log 'WARN' "$What failed (attempt $attempt of ${RetryCount}): $($_.Exception.Message)"
            if ($attempt -lt $RetryCount) {
                Start-Sleep -Seconds $delay
                $delay = [Math]::Min($delay * 2, $MaxDelaySeconds)
            }
        }
    }
    return $false
}

try {
    Write-Log 'INFO' "Send-SynkroExport started (PowerShell $($PSVersionTable.PSVersion)); destination $Destination"

    $sources = @()
    foreach ($pattern in $Path) {
        $sources += @(Get-ChildItem -Path $pattern -File -ErrorAction SilentlyContinue |
            Where-Object { $_.Name -notlike '*.tmp' -and $_.Name -notlike '*.sha256' })
    }
    $sources = @($sources | Sort-Object -Property @('LastWriteTimeUtc', 'FullName') -Unique)
    if ($sources.Count -eq 0) {
        Write-Log 'ERROR' "no file matches $($Path -join ', ')"
        exit $ExitNoFiles
    }

    $reachable = Invoke-WithRetry -What "reaching $Destination" -Action {
        if (-not (Test-Path -LiteralPath $Destination -PathType Container)) {
            throw "$Destination is not a reachable folder"
        }
    }
    if (-not $reachable) {
        Write-Log 'ERROR' "giving up: $Destination cannot be reached"
        exit $ExitDestinationUnreachable
    }

    $failed = 0
    foreach ($source in $sources) {
        $file = $source
        $ok = Invoke-WithRetry -What "sending $($file.Name)" -Action { Send-OneFile -Source $file }
        if (-not $ok) {
            $failed += 1
            Write-Log 'ERROR' "giving up on $($file.FullName)"
        }
    }
    if ($failed -gt 0) {
        Write-Log 'ERROR' "$failed of $($sources.Count) file(s) not delivered"
        exit $ExitDeliveryFailed
    }
    Write-Log 'INFO' "done: $($sources.Count) file(s) delivered"
    exit $ExitOk
}
catch {
    Write-Log 'ERROR' "unexpected error: $($_.Exception.Message)"
    exit $ExitUnexpected
}
